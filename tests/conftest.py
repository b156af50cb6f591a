"""Session-wide real servers: each starts once per test session (vLLM takes ~40 s on 2 cores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.onnxmodel import ensure_onnx_model
from tests.support.realmodel import PREPARE_HINT, is_prepared, real_thinker_dir, real_vllm_server
from tests.support.servers import RedisServer, VLLMServer
from tests.support.tinymodel import build_tiny_model


@pytest.fixture(scope="session", autouse=True)
def onnx_model() -> Path:
    """The default embedder's ONNX export of the packaged MiniLM, made once if missing (as `make onnx-model`)."""
    return ensure_onnx_model()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2 with ChatML and O1 Embedder special tokens, generated now (no model hub here)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def vllm(tiny_model: Path) -> Iterator[VLLMServer]:
    """The thought worker: vLLM (CPU build) serving the tiny model for completions."""
    with VLLMServer(tiny_model, "tiny-think") as server:
        yield server


@pytest.fixture(scope="session")
def vllm_embed(tiny_model: Path) -> Iterator[VLLMServer]:
    """The same checkpoint on vLLM's pooling runner (last token, normalised): the O1 profile's embedder."""
    # cpu_bind="1": vLLM pins its worker to core 0 by default; keep the two servers apart on 2 cores.
    with VLLMServer(tiny_model, "tiny-embed", embed=True, cpu_bind="1") as server:
        yield server


@pytest.fixture(scope="module")
def real_vllm() -> Iterator[VLLMServer]:
    """The real small thought worker: SmolLM2-135M-Instruct (from `make real-thinker`) on vLLM, bfloat16. Module
    scope: stopped after the tests that use it, so its memory and threads do not stay beside the rest of the run."""
    path = real_thinker_dir()
    if not is_prepared(path):
        # A skip, not a pass: pytest run without `make` has simply not prepared it.
        pytest.skip(f"no prepared SmolLM2 checkpoint at {path}: {PREPARE_HINT}")
    with real_vllm_server(path) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the tests' own, on a free port."""
    with RedisServer() as server:
        yield server
