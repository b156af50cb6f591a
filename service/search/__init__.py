"""Search: the pipeline (cache -> think -> embed -> fuse -> search), think profiles, coalescing."""
