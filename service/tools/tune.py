"""`thinksearch tune`: which think policy pays on a judged sample of a collection, as a job of the gateway.

Reads a BEIR split, starts `POST /v1/collections/{name}/tune` with its queries and judgements, follows the job
with a progress bar and prints the table (the work itself: service/search/tuning.py). Direct mode and a grid of
policies (generation configs × fusions) are scored; the best is written to the collection, thinking off where
nothing beats direct.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.search.tuning import TuneRow

# Heavy imports (httpx, tqdm) stay in the functions: cli.py imports this module for every command.

POLL_S = 0.5


def load_grid(path: str | None) -> dict[str, Any] | None:
    """A grid file as the API takes it ({"generation": [...] or {field: [values]}, "fusion": [...]}), checked here
    so a typo fails before any search; None: the server's default grid."""
    if path is None:
        return None
    from service.search.tuning import parse_grid

    grid = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        generations, fusions = parse_grid(grid)
    except ValueError as exc:
        raise SystemExit(f"--grid {path}: {exc}") from None
    return {
        "generation": [{"label": g.label, **g.fields} for g in generations],
        "fusion": [
            {"method": f.method, "query_weight": f.query_weight, "think_weight": f.think_weight} for f in fusions
        ],
    }


class Client:
    """The REST calls tuning makes; any 4xx/5xx or transport error ends the run with what the server said."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 60.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))
        self._errors = httpx.HTTPError
        self.base_url = base_url

    def call(self, what: str, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except self._errors as exc:
            raise SystemExit(f"{what}: {type(exc).__name__} talking to {self.base_url}: {exc}") from None
        if missing_ok and r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise SystemExit(f"{what}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json()


def follow(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """The job, polled with a progress bar until it ends; Ctrl-C cancels it (nothing is written then)."""
    from tqdm import tqdm

    job_id = job["job_id"]
    with tqdm(total=job["tune"]["searches"], unit="search", desc="tuning") as bar:
        try:
            while job["status"] in ("queued", "running"):
                time.sleep(POLL_S)
                job = client.call("following the tuning job", "GET", f"/v1/jobs/{job_id}")
                bar.set_description(job["tune"]["stage"][:60])
                bar.update(job["tune"]["done"] - bar.n)
        except KeyboardInterrupt:
            client.call("cancelling the tuning job", "DELETE", f"/v1/jobs/{job_id}")
            raise
    return job


def tune(
    *,
    base_url: str,
    data_dir: str,
    split: str,
    collection: str,
    api_key: str | None = None,
    max_queries: int | None = None,
    grid: str | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    timeout_s: float = 300.0,
    min_gain: float = 0.0,
) -> tuple[list[TuneRow], dict[str, Any]]:
    """The rows (direct first) and the outcome (best row, thinking on or off, what was written, the policy now)."""
    from service.search.tuning import TuneRow
    from service.tools.evaluation import judged_queries

    body_grid = load_grid(grid)
    client = Client(base_url, api_key)
    detail = client.call(f"reading collection {collection}", "GET", f"/v1/collections/{collection}", missing_ok=True)
    if detail is None or not detail["count"]:
        state = "does not exist" if detail is None else "is empty"
        raise SystemExit(
            f"collection {collection} {state}: load the corpus first, e.g. `thinksearch ingest "
            f"{Path(data_dir) / 'corpus.jsonl'} --collection {collection} --create` (or `thinksearch eval`)"
        )
    queries, qrels = judged_queries(Path(data_dir), split, max_queries)
    if not queries:
        raise SystemExit(f"no judged queries in {data_dir} for split {split}")
    body = {
        "queries": queries,
        "qrels": qrels,
        "grid": body_grid,
        "dry_run": dry_run,
        "min_gain": min_gain,
        "concurrency": concurrency,
        # The server's own deadline: a slow thought answers direct, marked degraded (and the row is no candidate).
        "deadline_ms": int(min(600_000, timeout_s * 1000)),
    }
    job = client.call(f"starting a tuning job on {collection}", "POST", f"/v1/collections/{collection}/tune", json=body)
    job = follow(client, job)
    if job["status"] != "succeeded":
        raise SystemExit(f"tuning job {job['job_id']} ended {job['status']}: {job.get('error') or ''}")
    result = job["tune"]["result"]
    rows = [TuneRow.from_public(r) for r in result["rows"]]
    for r in rows[1:]:
        if not r.fully_thought:
            print(f"warning: {r.label}: not every query was answered in think mode ({r.served}): not a candidate")
    outcome = {
        "think": result["policy"],
        "best": result["best"],
        "thinking": result["thinking"],
        "written": result["written"],
        "original": result["original"],
        "job_id": job["job_id"],
    }
    return rows, outcome


def _fmt(value: float | None, spec: str, none: str) -> str:
    return none if value is None else format(value, spec)


def markdown_table(rows: Sequence[TuneRow]) -> str:
    lines = [
        "| generation | fusion | queries | nDCG@10 | Recall@100 | MRR@10 | p50 ms | cold p50 ms | tokens/query "
        "| better/worse | served as | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r.metrics
        served = ", ".join(f"{k} {v}" for k, v in sorted(r.served.items()))
        tokens = _fmt(r.tokens_per_query, ".1f", "-" if r.generation is None else "cached")
        versus = f"+{r.vs_direct[0]}/−{r.vs_direct[1]}" if r.vs_direct else "-"
        lines.append(
            f"| {r.generation or 'direct'} | {r.fusion or '-'} | {r.queries} | {m['ndcg@10']:.4f} | "
            f"{m['recall@100']:.4f} | {m['mrr@10']:.4f} | {r.latency['p50_ms']:.0f} | "
            f"{_fmt(r.cold_p50_ms, '.0f', '-')} | {tokens} | {versus} | "
            f"{served} | {'**winner**' if r.winner else ''} |"
        )
    return "\n".join(lines) + "\n"


NOTES = (
    "p50 ms: the row's own searches, thoughts already cached (a vector fusion with its own α embeds them once: its "
    "fused vector is a new cache entry, warm it is as fast as the others). cold p50 ms: the generation pass, "
    "where each query's thoughts were made (what a first search of a query costs). tokens/query: worker tokens "
    "generated per query in that pass (`thinksearch_thought_tokens_total` of the gateway before and after; "
    "'cached': the thoughts were in the cache already). better/worse: queries whose nDCG@10 the row raises/lowers "
    "against direct's. Ties on nDCG@10 go to direct."
)


def write_report(rows: Sequence[TuneRow], outcome: dict[str, Any], out: Path, context: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines = ["# Think policy tuning", "", f"- when: {when}", *(f"- {k}: {v}" for k, v in context.items())]
    lines += [
        f"- best think row: {outcome['best']}; thinking {'on' if outcome['thinking'] else 'off'}",
        f"- policy now: `{json.dumps(outcome['think'])}`",
    ]
    text = "\n".join(lines) + "\n\n" + markdown_table(rows) + "\n" + NOTES + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    payload = {"when": when, **context, **outcome, "rows": [r.public() for r in rows]}
    (out / "report.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out / "report.md"


def _command(args: argparse.Namespace) -> None:
    if args.split == "test":
        print("warning: tuning on `test` and reporting on it overstates the gain: tune on another split")
    context = {k: getattr(args, k) for k in ("data", "split", "collection", "url", "max_queries", "dry_run")}
    context["grid"] = args.grid or "default"
    rows, outcome = tune(
        base_url=args.url,
        data_dir=args.data,
        split=args.split,
        collection=args.collection,
        api_key=args.api_key or os.environ.get("THINKSEARCH_API_KEY"),
        max_queries=args.max_queries,
        grid=args.grid,
        dry_run=args.dry_run,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        min_gain=args.min_gain,
    )
    print()
    print(markdown_table(rows))
    print(f"best think row: {outcome['best']}; thinking {'on' if outcome['thinking'] else 'off'}")
    if args.dry_run:
        print("dry run: the collection's policy is as it was")
    else:
        print(f"written: {json.dumps(outcome['written'])}")
    print(f"policy now: {json.dumps(outcome['think'])}")
    if args.report:
        print(f"report: {write_report(rows, outcome, Path(args.report), context)}")


def add_tune_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="measure direct and a grid of think policies on a judged split; write the best")
    p.add_argument("--data", required=True, help="BEIR folder: queries.jsonl, qrels/SPLIT.tsv (corpus already in C)")
    p.add_argument("--split", required=True, help="qrels/SPLIT.tsv: a split you do not report on, e.g. train")
    p.add_argument("--collection", required=True, help="holds the corpus already (thinksearch ingest or eval)")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY; tuning needs scope admin")
    p.add_argument("--max-queries", type=int, default=None, help="the first N judged queries in sorted id order")
    p.add_argument("--grid", default=None, help="JSON {generation: [...] or {field: [values]}, fusion: [...]}")
    p.add_argument("--dry-run", action="store_true", help="measure only: the policy is left as it was")
    p.add_argument("--report", default=None, help="folder for report.md and report.json")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per search (also its think deadline)")
    p.add_argument("--min-gain", type=float, default=0.0, help="nDCG@10 thinking must add over direct to be on")
    p.set_defaults(func=_command)
