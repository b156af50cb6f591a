"""The in-process embedder on ONNX Runtime (EMBEDDER_BACKEND=onnx, the default): MiniLM without torch.

The model is the packaged all-MiniLM-L6-v2 exported once to ONNX (service/clients/onnx_export.py, `thinksearch
export-onnx`, `make onnx-model`, the image build) into a folder outside git: `model.onnx` (the BERT module: token
embeddings), `tokenizer.json` (the model's own tokenizer) and `thinksearch.json` (name, window, dimension; written
last, so a folder without it is an unfinished export). What sentence-transformers does on top of the BERT module is
done here the same way: the same tokenizer and truncation (the model's max_seq_length, 256), padding to the
longest text of a forward batch, mean pooling over the attention mask, L2 normalisation. Vectors equal torch's to
~1e-7 (tests/clients/test_onnx_embedder.py).

Two lanes as in the torch backend (service/clients/embedding_lanes.py): each lane has an ONNX Runtime session of
its own, since intra-op threads are a property of a session: queries on EMBEDDER_QUERY_THREADS (1), documents on
EMBEDDER_THREADS (0 = one per core this process may run on, as torch's default; ONNX Runtime's own default counts
physical cores, and took one thread on the 2-core build machines, half the throughput).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.clients.embedding_lanes import Lanes
from service.clients.local_embedder import DEFAULT_LOCAL_MODEL

__all__ = ["CONFIG_FILE", "MODEL_FILE", "TOKENIZER_FILE", "OnnxEmbedder", "OnnxModelMissing", "default_onnx_dir"]

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "thinksearch.json"  # written last by the export
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_HINT = "export it once with `thinksearch export-onnx` (needs the torch extra) or `make onnx-model`"


class OnnxModelMissing(RuntimeError):
    """No finished ONNX export where EMBEDDER_ONNX_DIR points."""


def default_onnx_dir() -> Path:
    """Where the export goes and the embedder looks when EMBEDDER_ONNX_DIR is unset (outside git)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "thinksearch" / "onnx" / "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class OnnxModelConfig:
    name: str  # the embedder's name (collections and vector cache keys carry it): the source model's
    max_seq_length: int  # tokens the model reads, special tokens included
    dimension: int

    @classmethod
    def read(cls, folder: Path) -> OnnxModelConfig:
        path = folder / CONFIG_FILE
        if not path.is_file() or not (folder / MODEL_FILE).is_file() or not (folder / TOKENIZER_FILE).is_file():
            raise OnnxModelMissing(f"no exported ONNX model in {folder}: {EXPORT_HINT}")
        raw = json.loads(path.read_text())
        return cls(str(raw["name"]), int(raw["max_seq_length"]), int(raw["dimension"]))


class TokenizerView:
    """What chunking reads of a tokenizer (`backend_tokenizer`, as on a transformers fast tokenizer)."""

    def __init__(self, tokenizer: Any) -> None:
        self.backend_tokenizer = tokenizer


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime, off the event loop, in two lanes (one session each)."""

    def __init__(
        self,
        model: str | None,
        batch_size: int,
        threads: int = 0,
        query_threads: int = 1,
        model_dir: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(model_dir) if model_dir else default_onnx_dir()
        config = OnnxModelConfig.read(folder)
        wanted = model or DEFAULT_LOCAL_MODEL
        if wanted != config.name:
            raise OnnxModelMissing(
                f"{folder} holds an export of {config.name!r}, not of EMBEDDER_MODEL {wanted!r}: export that model "
                "with `thinksearch export-onnx --model …` into EMBEDDER_ONNX_DIR, or use EMBEDDER_BACKEND=torch"
            )
        self.name = config.name
        self._config = config
        self._batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # The packaged tokenizer.json carries truncation and fixed padding at 128; sentence-transformers truncates
        # at max_seq_length and pads to the longest text of a batch.
        self._tokenizer.enable_truncation(max_length=config.max_seq_length)
        pad = self._tokenizer.token_to_id("[PAD]")
        self._tokenizer.enable_padding(pad_id=pad if pad is not None else 0, pad_token="[PAD]")
        path = str(folder / MODEL_FILE)
        self._sessions = {
            False: ort.InferenceSession(path, _session_options(ort, query_threads), providers=["CPUExecutionProvider"]),
            True: ort.InferenceSession(path, _session_options(ort, threads), providers=["CPUExecutionProvider"]),
        }
        self._inputs = {i.name for i in self._sessions[False].get_inputs()}
        self._lanes = Lanes(self._encode, config.dimension)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: chunking counts tokens as the model reads them."""
        return TokenizerView(self._tokenizer)

    @property
    def max_tokens(self) -> int:
        """The model's window in tokens, its special tokens included (longer texts are cut off)."""
        return self._config.max_seq_length

    async def dimension(self) -> int:
        return self._config.dimension

    async def embed(self, texts: list[str], *, documents: bool = False) -> np.ndarray:
        return await self._lanes.embed(texts, documents=documents)

    def _encode(self, texts: list[str], documents: bool = False) -> np.ndarray:
        """Forward batches of `batch_size` texts, longest first (as sentence-transformers: less padding)."""
        session = self._sessions[documents]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self._config.dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            (hidden,) = session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            out[rows] = mean_pool(hidden, feed["attention_mask"])
        return out

    async def ping(self) -> None:
        await self._lanes.ping()

    async def aclose(self) -> None:
        await self._lanes.aclose()


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling over the attention mask, then L2 normalisation (float32)."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    vectors = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores this process may run on
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _session_options(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or _cores()  # 0: one per core, as torch
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep rather than spin: the cores are shared with the other lane (and vLLM).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
