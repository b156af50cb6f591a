"""Retrieval quality through the public REST API, on a BEIR-format folder.

Ingests `corpus.jsonl` through the bulk endpoint (title and text as separate fields: the service embeds
`title + " " + text`, as MTEB does), runs every query that has judgements, and scores with pytrec_eval
(trec_eval's linear-gain nDCG). One evaluation is one *row*: a search mode (direct or think) and, optionally, a
retrieval mode; `evaluate_rows` runs the cross product on one ingested collection and `write_report` writes the
rows as a markdown table and JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from service.search.scoring import latency_percentiles, score
from service.tools.upload import ingest_file

MODES = ("direct", "think")
# Long enough that a slow thinker answers in think mode instead of falling back to direct at the default deadline:
# the think row measures thinking, and `served` says if any query was still answered otherwise.
THINK_DEADLINE_MS = 600_000


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


def search_body(query: str, mode: str, retrieval: str | None) -> dict:
    """One evaluation search; `retrieval` is sent only when asked for, so servers without the field still answer."""
    body: dict = {"query": query, "top_k": 100, "think": mode == "think"}
    if mode == "think":
        body["deadline_ms"] = THINK_DEADLINE_MS
    if retrieval is not None:
        body["retrieval"] = retrieval
    return body


@dataclass
class Row:
    """One evaluated configuration: its scores, client-side latency percentiles and how queries were served."""

    mode: str
    retrieval: str | None
    queries: int
    metrics: dict[str, float]
    latency: dict[str, float]
    served: dict[str, int] = field(default_factory=dict)  # response mode (+ " (degraded)") -> queries
    load: tuple[float, float] | None = None  # 1-minute load average before and after the row's searches

    @property
    def label(self) -> str:
        return self.mode if self.retrieval is None else f"{self.mode} / {self.retrieval}"


class _Api:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(900.0, connect=10.0))

    def search(self, name: str, body: dict) -> tuple[dict, float]:
        t0 = time.perf_counter()
        r = self.http.post(f"/v1/collections/{name}/search", json=body)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise SystemExit(f"search: {r.status_code} {r.text[:500]}")
        return r.json(), elapsed

    def count(self, name: str) -> int | None:
        r = self.http.get(f"/v1/collections/{name}")
        return int(r.json()["count"]) if r.status_code == 200 else None


def ensure_ingested(api: _Api, root: Path, collection: str, *, reuse: bool) -> None:
    """Ingest the corpus through the bulk path; with `reuse`, a collection already holding every document is kept."""
    if reuse:
        expected = sum(1 for _ in read_jsonl(root / "corpus.jsonl"))
        have = api.count(collection)
        if have == expected:
            print(f"collection {collection}: {have} documents already there, reused")
            return
        if have is not None:
            raise SystemExit(f"collection {collection} holds {have} of {expected} documents: delete it or rename")
    job = ingest_file(api.http, root / "corpus.jsonl", collection, create=True)
    if job["status"] != "succeeded":
        raise SystemExit(f"ingest job {job['job_id']} ended {job['status']}")


def judged_queries(root: Path, split: str, max_queries: int | None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    queries = {q["_id"]: q["text"] for q in read_jsonl(root / "queries.jsonl") if q["_id"] in qrels}
    qids = sorted(queries)[:max_queries] if max_queries else sorted(queries)
    return {q: queries[q] for q in qids}, {q: qrels[q] for q in qids}


def evaluate_row(
    api: _Api,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    mode: str,
    retrieval: str | None,
    concurrency: int,
) -> Row:
    run: dict[str, dict[str, float]] = {}
    seconds: list[float] = []
    served: Counter[str] = Counter()
    label = mode if retrieval is None else f"{mode}/{retrieval}"
    load_before = os.getloadavg()[0]
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(queries), desc=label, unit="query") as bar:
        answers = pool.map(lambda q: api.search(collection, search_body(queries[q], mode, retrieval)), queries)
        for qid, (response, elapsed) in zip(queries, answers, strict=True):
            # A document never ranks against the query it came from (BEIR's rule; ids differ in SciFact).
            run[qid] = {h["id"]: h["score"] for h in response["results"] if h["id"] != qid}
            served[response["mode"] + (" (degraded)" if response["degraded"] else "")] += 1
            seconds.append(elapsed)
            bar.update()
    load = (load_before, os.getloadavg()[0])
    return Row(mode, retrieval, len(queries), score(qrels, run), latency_percentiles(seconds), dict(served), load)


def evaluate_rows(
    *,
    base_url: str,
    data_dir: str,
    collection: str,
    modes: Sequence[str] = ("direct",),
    retrievals: Sequence[str | None] = (None,),
    api_key: str | None = None,
    split: str = "test",
    max_queries: int | None = None,
    concurrency: int = 4,
    skip_ingest: bool = False,
    reuse: bool = False,
) -> list[Row]:
    """One row per (mode, retrieval), on one collection ingested once."""
    root = Path(data_dir)
    api = _Api(base_url, api_key)
    if not skip_ingest:
        ensure_ingested(api, root, collection, reuse=reuse)
    queries, qrels = judged_queries(root, split, max_queries)
    rows = []
    for retrieval in retrievals:
        for mode in modes:
            row = evaluate_row(api, collection, queries, qrels, mode, retrieval, concurrency)
            print(f"{row.label}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items()) + f"; {row.served}")
            rows.append(row)
    return rows


def run_evaluation(*, think: bool, **kwargs) -> dict[str, float]:
    """One mode's scores (the single-row form of `evaluate_rows`)."""
    return evaluate_rows(modes=("think" if think else "direct",), **kwargs)[0].metrics


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| mode | retrieval | queries | nDCG@10 | Recall@100 | MRR@10 | p50 ms | p95 ms | p99 ms | served as "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, lat = r.metrics, r.latency
        served = ", ".join(f"{k} {v}" for k, v in sorted(r.served.items()))
        load = f"{r.load[0]:.1f} → {r.load[1]:.1f}" if r.load else "n/a"
        lines.append(
            f"| {r.mode} | {r.retrieval or 'default'} | {r.queries} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
            f"{m['mrr@10']:.4f} | {lat['p50_ms']:.0f} | {lat['p95_ms']:.0f} | {lat['p99_ms']:.0f} | {served} | {load} |"
        )
    return "\n".join(lines) + "\n"


# What a think row measures depends on the thinker behind it; said beside every table.
TINY_MODEL_NOTE = (
    "What a think row proves depends on the thinker. With the generated tiny test model (random weights; the local "
    "stack's thinker) it proves the wiring: every query answered in think mode (see `served as`), n thoughts "
    "generated by vLLM, embedded with the query, fused into one query vector (hyde: the mean of the query's and the "
    "n thoughts' embeddings) and searched through the same public API as direct mode. It cannot measure quality: "
    "the thoughts are random text, so the think row shows how far n noise passages pull the fused vector from the "
    "query (n of the n+1 averaged vectors for hyde), not what HyDE, O1 or query2doc buy. That takes a real "
    "checkpoint (`make real-thinker`'s SmolLM2 on CPU, which `make eval-report` uses when it is prepared, or a "
    "larger instruct model on a GPU): docs/benchmarks.md, and `thinksearch tune` for a collection's own policy."
)


def write_report(rows: Sequence[Row], out: Path, context: dict) -> Path:
    """report.md (context lines, the table, the note on the thinker) and report.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines = ["# Retrieval evaluation", "", f"- when: {when}"] + [f"- {k}: {v}" for k, v in context.items()]
    text = "\n".join(lines) + "\n\n" + markdown_table(rows) + "\n" + TINY_MODEL_NOTE + "\n"
    (out / "report.md").write_text(text)
    payload = {"when": when, **context, "rows": [asdict(r) | {"label": r.label} for r in rows]}
    (out / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
    return out / "report.md"
