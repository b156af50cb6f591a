"""`thinksearch export-onnx`: the packaged MiniLM exported into a folder, checked, complete or absent."""

from __future__ import annotations

import json
from pathlib import Path

from service.cli import main as cli
from service.clients.onnx_embedder import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE
from service.clients.onnx_export import is_exported


def test_the_export_lands_whole_and_runs_once(tmp_path: Path):
    out = tmp_path / "minilm"
    cli(["export-onnx", "--out", str(out)])
    assert is_exported(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE])
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (config["max_seq_length"], config["dimension"], config["opset"]) == (256, 384, 17)
    assert [p.name for p in tmp_path.iterdir()] == ["minilm"]  # no temporary folder left beside it
    assert out.stat().st_mode & 0o755 == 0o755  # readable by a non-root server (the image's user)

    before = (out / MODEL_FILE).stat().st_mtime_ns
    cli(["export-onnx", "--out", str(out)])  # finished already: nothing runs
    assert (out / MODEL_FILE).stat().st_mtime_ns == before
