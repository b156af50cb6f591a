"""The evaluation's scoring on a small hand-computed case, and its BEIR readers on the shared SciFact copy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from service.settings import Settings
from service.tools.evaluation import (
    Row,
    evaluate_rows,
    latency_percentiles,
    read_jsonl,
    read_qrels,
    score,
    search_body,
    write_report,
)
from tests.support.gateway import Gateway

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "beir" / "scifact"


def test_scores_match_hand_computed_values():
    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d9": 1}, "q3": {"d5": 1}}
    run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d3": 0.7},  # relevant at ranks 2 and 3
        "q2": {f"x{i}": 1.0 - i / 100 for i in range(10)} | {"d9": 0.01},  # relevant at rank 11
        # q3 missing from the run: scores 0
    }
    got = score(qrels, run)
    # Linear gain, as trec_eval: DCG = sum(rel / log2(rank + 1)).
    dcg_q1 = 1 / math.log2(3) + 2 / math.log2(4)
    idcg_q1 = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@10"] == pytest.approx((dcg_q1 / idcg_q1) / 3, abs=1e-6)
    assert got["mrr@10"] == pytest.approx((1 / 2) / 3, abs=1e-6)  # q2's hit at rank 11 is past the cut
    assert got["recall@100"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-6)


def test_reads_beir_layout():
    qrels = read_qrels(SCIFACT / "qrels" / "test.tsv")
    assert len(qrels) == 300 and sum(len(d) for d in qrels.values()) == 339
    first = next(read_jsonl(SCIFACT / "corpus.jsonl"))
    assert {"_id", "title", "text"} <= set(first)


def test_search_body_sends_retrieval_only_when_given():
    direct = search_body("q", "direct", None)
    assert direct == {"query": "q", "top_k": 100, "think": False}
    think = search_body("q", "think", "hybrid")
    assert think["think"] is True and think["retrieval"] == "hybrid"
    assert think["deadline_ms"] >= 60_000  # a slow thinker still answers in think mode


def test_latency_percentiles_in_milliseconds():
    got = latency_percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert got["p50_ms"] == pytest.approx(50.5)
    assert got["p95_ms"] == pytest.approx(95.05)
    assert got["p99_ms"] == pytest.approx(99.01)


def test_report_has_one_row_per_mode_and_retrieval(tmp_path):
    metrics = {"ndcg@10": 0.6, "recall@100": 0.9, "mrr@10": 0.55}
    latency = {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0}
    rows = [
        Row(mode, retrieval, 300, metrics, latency, {mode: 300})
        for retrieval in (None, "sparse")
        for mode in ("direct", "think")
    ]
    path = write_report(rows, tmp_path / "out", {"data": "scifact"})
    table = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header + one line per row
    direct_row = "| direct | default | 300 | 0.6000 | 0.9000 | 0.5500 | 10 | 20 | 30 | direct 300 | n/a |"
    assert table[1].startswith(direct_row)
    assert table[4].startswith("| think | sparse |")
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["label"] for r in payload["rows"]] == ["direct", "think", "direct / sparse", "think / sparse"]
    assert payload["data"] == "scifact"


def small_beir(root: Path, queries: int = 5, extra_docs: int = 30) -> Path:
    """A BEIR folder cut from SciFact: a few judged test queries, their relevant documents and some others."""
    qrels = read_qrels(SCIFACT / "qrels" / "test.tsv")
    chosen = dict(sorted(qrels.items())[:queries])
    wanted = {d for docs in chosen.values() for d in docs}
    corpus = list(read_jsonl(SCIFACT / "corpus.jsonl"))
    docs = [d for d in corpus if d["_id"] in wanted] + [d for d in corpus if d["_id"] not in wanted][:extra_docs]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    texts = [q for q in read_jsonl(SCIFACT / "queries.jsonl") if q["_id"] in chosen]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in texts))
    lines = [f"{q}\t{d}\t{s}" for q, docs in chosen.items() for d, s in docs.items()]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return root


def test_rows_through_a_real_gateway_direct_and_think(tmp_path, vllm, capsys):
    data = small_beir(tmp_path / "beir")
    settings = Settings(
        _env_file=None, qdrant_path=":memory:", thinker_url=vllm.base_url, think_n=2, think_max_tokens=16
    )
    with Gateway(settings) as gw:
        # Dense: the scores then follow the query vector alone, which the thoughts must move (under hybrid, BM25's
        # share of the fused ranks can leave 5 queries' metrics unchanged).
        kwargs = dict(
            base_url=gw.url, data_dir=str(data), collection="small", concurrency=2, reuse=True, retrievals=("dense",)
        )
        rows = evaluate_rows(modes=("direct", "think"), **kwargs)
        again = evaluate_rows(modes=("direct",), **kwargs)  # the collection is whole: not ingested twice
    assert "already there, reused" in capsys.readouterr().out
    direct, think = rows
    assert direct.served == {"direct": 5} and think.served == {"think": 5}  # every think query really thought
    assert direct.metrics["ndcg@10"] > 0.5  # the relevant documents among 35 rank high for MiniLM
    assert again[0].metrics == direct.metrics
    assert 0 < direct.latency["p50_ms"] <= direct.latency["p99_ms"]
    assert think.metrics != direct.metrics  # the thoughts moved the query vector
