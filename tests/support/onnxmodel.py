"""The exported ONNX MiniLM that the default (onnx) embedder serves: made once if missing (`make onnx-model` does
the same), where the gateways of the tests look for it (EMBEDDER_ONNX_DIR, else the export's default folder)."""

from __future__ import annotations

import os
from pathlib import Path


def onnx_model_dir() -> Path:
    from service.clients.onnx_embedder import default_onnx_dir

    configured = os.environ.get("EMBEDDER_ONNX_DIR")
    return Path(configured) if configured else default_onnx_dir()


def ensure_onnx_model() -> Path:
    """The folder of a finished export; exports now (torch + onnx, ~10 s) when there is none."""
    from service.clients.onnx_export import export, is_exported

    folder = onnx_model_dir()
    return folder if is_exported(folder) else export(None, folder)
