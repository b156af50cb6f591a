"""Retrieval quality through the public REST API, on a BEIR-format folder.

Ingests `corpus.jsonl` through the bulk endpoint (title and text as separate fields: the service embeds
`title + " " + text`, as MTEB does), runs every query that has judgements, and scores with pytrec_eval
(trec_eval's linear-gain nDCG).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytrec_eval
from tqdm import tqdm

from service.ingest.upload import ingest_file


def read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    return dict(qrels)


def score(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10, averaged over the judged queries."""
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    # A judged query the run misses entirely scores 0, as in BEIR.
    n = len(qrels)
    return {
        "ndcg@10": sum(full.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / n,
        "recall@100": sum(full.get(q, {}).get("recall_100", 0.0) for q in qrels) / n,
        "mrr@10": sum(mrr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / n,
    }


class _Api:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0))

    def search(self, name: str, query: str, think: bool) -> dict:
        r = self.http.post(f"/v1/collections/{name}/search", json={"query": query, "top_k": 100, "think": think})
        if r.status_code != 200:
            raise SystemExit(f"search: {r.status_code} {r.text[:500]}")
        return r.json()


def run_evaluation(
    *,
    base_url: str,
    data_dir: str,
    collection: str,
    think: bool,
    api_key: str | None = None,
    split: str = "test",
    max_queries: int | None = None,
    concurrency: int = 4,
    skip_ingest: bool = False,
) -> dict[str, float]:
    root = Path(data_dir)
    api = _Api(base_url, api_key)
    if not skip_ingest:
        # The bulk path: one streamed upload, followed as a job.
        job = ingest_file(api.http, root / "corpus.jsonl", collection, create=True)
        if job["status"] != "succeeded":
            raise SystemExit(f"ingest job {job['job_id']} ended {job['status']}")

    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    queries = {q["_id"]: q["text"] for q in read_jsonl(root / "queries.jsonl") if q["_id"] in qrels}
    qids = sorted(queries)[:max_queries] if max_queries else sorted(queries)
    qrels = {q: qrels[q] for q in qids}

    run: dict[str, dict[str, float]] = {}
    modes: dict[str, int] = defaultdict(int)
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(qids), desc="search", unit="query") as bar:
        for qid, response in zip(
            qids, pool.map(lambda q: api.search(collection, queries[q], think), qids), strict=True
        ):
            # A document never ranks against the query it came from (BEIR's rule; ids differ in SciFact).
            run[qid] = {h["id"]: h["score"] for h in response["results"] if h["id"] != qid}
            modes[response["mode"] + (" (degraded)" if response["degraded"] else "")] += 1
            bar.update()

    results = score(qrels, run)
    print(f"collection={collection} queries={len(qids)} think={think} modes={dict(modes)}")
    for name, value in results.items():
        print(f"{name:>11}: {value:.5f}")
    return results
