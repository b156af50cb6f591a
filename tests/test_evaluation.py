"""The evaluation's scoring on a small hand-computed case, and its BEIR readers on the shared SciFact copy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from service.evaluation import read_jsonl, read_qrels, score

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


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
