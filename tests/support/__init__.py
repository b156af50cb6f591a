"""Test support: a generated tiny model and real server processes (vLLM, Redis)."""
