"""Retrieval quality of a run against judgements (trec_eval's measures, by pytrec_eval), and latency percentiles.

Shared by tuning jobs in the gateway and the evaluation clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def score(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10, averaged over the judged queries (one the run misses scores 0, as in BEIR)."""
    per_query = score_per_query(qrels, run)
    n = max(len(qrels), 1)
    return {k: sum(q[k] for q in per_query.values()) / n for k in ("ndcg@10", "recall@100", "mrr@10")}


def score_per_query(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    import pytrec_eval

    judged = {q: dict(docs) for q, docs in qrels.items()}
    ranked = {q: dict(docs) for q, docs in run.items()}
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in ranked.items()}
    full = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(ranked)
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    return {
        q: {
            "ndcg@10": full.get(q, {}).get("ndcg_cut_10", 0.0),
            "recall@100": full.get(q, {}).get("recall_100", 0.0),
            "mrr@10": mrr.get(q, {}).get("recip_rank", 0.0),
        }
        for q in judged
    }


def latency_percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    if not seconds:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}
