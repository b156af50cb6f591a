"""store/edge"""
