"""`thinksearch tune`: which think policy pays on a judged sample of a collection, measured through the REST API.

Direct mode and a grid of policies (generation configs × fusions) are scored on one split; the best is written to
the collection, thinking off where nothing beats direct. Each generation config is PATCHed and its thoughts made
once (the service caches them); every fusion then reuses them through the search's own `fusion` override.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

# Heavy imports (httpx, numpy, tqdm, pytrec_eval) stay in the functions: cli.py imports this module for every command.

GENERATION_FIELDS = ("profile", "prompt", "n", "max_tokens", "temperature", "sparse_query_repeats")
SCIFACT_PROMPT = "Please write a scientific paper passage to support/refute the claim.\nClaim: {query}\nPassage:"
DEFAULT_GRID: dict[str, Any] = {
    # {} is the collection's own generation config, as it stands when tuning starts.
    "generation": [{"label": "current"}, {"label": "scifact-prompt", "prompt": SCIFACT_PROMPT}],
    "fusion": [
        {"method": "vector", "query_weight": None},
        {"method": "vector", "query_weight": 0.5},
        {"method": "vector", "query_weight": 0.7},
        *({"method": "rank", "think_weight": w} for w in (0.1, 0.2, 0.3, 0.5)),
    ],
}
# Replicas re-read a policy at most once a second (service/documents/policies.py): a search sent sooner after a
# PATCH could still think with the old config behind a load balancer.
POLICY_TTL_S = 1.1
TOKENS = re.compile(r"^thinksearch_thought_tokens_total\s+(\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Generation:
    label: str
    fields: dict[str, Any]  # policy fields to set; the ones not named keep the collection's values


@dataclass(frozen=True)
class Fusion:
    method: str
    query_weight: float | None = None
    think_weight: float | None = None

    @property
    def label(self) -> str:
        if self.method == "vector":
            return "vector α=" + ("profile" if self.query_weight is None else f"{self.query_weight:g}")
        return "rank w=" + ("0.3 (default)" if self.think_weight is None else f"{self.think_weight:g}")

    def body(self) -> dict[str, Any]:
        return {"method": self.method, "query_weight": self.query_weight, "think_weight": self.think_weight}

    def policy(self) -> dict[str, Any]:
        return {"fusion": self.method, "query_weight": self.query_weight, "think_weight": self.think_weight}


@dataclass
class TuneRow:
    generation: str | None  # None: direct mode
    fusion: str | None
    queries: int
    metrics: dict[str, float]
    latency: dict[str, float]
    served: dict[str, int]
    cold_p50_ms: float | None = None  # the generation pass: thoughts made (or found) for each query
    tokens_per_query: float | None = None  # worker tokens per query whose thoughts were made; None: all cached
    policy: dict[str, Any] = field(default_factory=dict)  # what would be written for this row
    winner: bool = False
    # Queries whose nDCG@10 this row raises / lowers against direct's: how much of a small gain is a few queries.
    vs_direct: tuple[int, int] | None = None
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # nDCG@10 by query (not in the report)

    @property
    def label(self) -> str:
        return "direct" if self.generation is None else f"{self.generation} / {self.fusion}"

    @property
    def fully_thought(self) -> bool:
        return self.served.get("think", 0) == self.queries


def load_grid(path: str | None) -> tuple[list[Generation], list[Fusion]]:
    """The default grid, or a JSON file {"generation": [...] or {field: [values]}, "fusion": [...]}."""
    grid = DEFAULT_GRID if path is None else json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(grid, dict) or set(grid) - {"generation", "fusion"}:
        raise SystemExit(f"--grid {path}: an object with 'generation' and 'fusion'")
    gens = grid.get("generation", [{}])
    if isinstance(gens, dict):  # {field: [values]}: the cross product
        keys = list(gens)
        gens = [dict(zip(keys, values, strict=True)) for values in itertools.product(*gens.values())]
    generations = []
    for i, g in enumerate(gens):
        fields = {k: v for k, v in g.items() if k != "label"}
        if unknown := set(fields) - set(GENERATION_FIELDS):
            raise SystemExit(
                f"--grid: generation {i}: unknown {sorted(unknown)}; fields: {', '.join(GENERATION_FIELDS)}"
            )
        label = g.get("label") or (", ".join(f"{k}={v!r}"[:40] for k, v in fields.items()) or "current")
        generations.append(Generation(label, fields))
    fusions = []
    for i, f in enumerate(grid.get("fusion", DEFAULT_GRID["fusion"])):
        if f.get("method") not in ("vector", "rank") or set(f) - {"method", "query_weight", "think_weight"}:
            raise SystemExit(f"--grid: fusion {i}: {{'method': 'vector'|'rank', 'query_weight'?, 'think_weight'?}}")
        fusions.append(Fusion(f["method"], f.get("query_weight"), f.get("think_weight")))
    if not generations or not fusions:
        raise SystemExit("--grid: at least one generation config and one fusion")
    return generations, fusions


class Client:
    """The REST calls tuning makes; any 4xx/5xx or transport error ends the run with what the server said."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        import httpx

        from service.tools.evaluation import _Api

        self._errors = httpx.HTTPError
        self.api = _Api(base_url, api_key)
        self.api.http.timeout = httpx.Timeout(timeout_s, connect=10.0)
        self.base_url = base_url

    def _call(self, what: str, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        try:
            r = self.api.http.request(method, path, **kwargs)
        except self._errors as exc:
            raise SystemExit(f"{what}: {type(exc).__name__} talking to {self.base_url}: {exc}") from None
        if missing_ok and r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise SystemExit(f"{what}: HTTP {r.status_code}: {r.text[:500]}")
        return r

    def collection(self, name: str) -> dict[str, Any] | None:
        r = self._call(f"reading collection {name}", "GET", f"/v1/collections/{name}", missing_ok=True)
        return None if r is None else r.json()

    def patch(self, name: str, think: dict[str, Any]) -> dict[str, Any]:
        r = self._call(
            f"changing the think policy of {name} to {think}", "PATCH", f"/v1/collections/{name}", json={"think": think}
        )
        return r.json()["think"]

    def tokens(self) -> float | None:
        """The worker tokens this gateway has had generated (one replica's count: run tuning against one)."""
        m = TOKENS.search(self._call("reading /metrics", "GET", "/metrics").text)
        return float(m.group(1)) if m else None

    def search(self, name: str, body: dict[str, Any]) -> tuple[dict, float]:
        try:
            return self.api.search(name, body)  # non-200: SystemExit with the server's problem text
        except self._errors as exc:
            raise SystemExit(f"search: {type(exc).__name__} talking to {self.base_url}: {exc}") from None


@dataclass
class Pass:
    run: dict[str, dict[str, float]]
    seconds: list[float]
    served: Counter[str]
    states: Counter[str]  # thought_cache of think answers: miss = this search had the thoughts made


def run_pass(
    client: Client, collection: str, queries: dict[str, str], body: Callable[[str], dict], concurrency: int, bar: tqdm
) -> Pass:
    result = Pass({}, [], Counter(), Counter())
    pool = ThreadPoolExecutor(concurrency)
    try:
        futures = {qid: pool.submit(client.search, collection, body(text)) for qid, text in queries.items()}
        for qid, future in futures.items():
            response, elapsed = future.result()
            # A document never ranks against the query it came from (BEIR's rule, as in `eval`).
            result.run[qid] = {h["id"]: h["score"] for h in response["results"] if h["id"] != qid}
            result.served[response["mode"] + (" (degraded)" if response["degraded"] else "")] += 1
            if response.get("thought_cache"):
                result.states[response["thought_cache"]] += 1
            result.seconds.append(elapsed)
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an error or Ctrl-C does not wait for the queued searches
    return result


def settle(client: Client, name: str, original: dict[str, Any], touched: Sequence[str], write: dict[str, Any]) -> None:
    """The generation fields tuning changed go back to what they were, then `write` is applied.

    GET shows a policy with defaults filled in, so a field is reset to null first: where the original equals that
    default it stays null (it follows the service's settings, as a field never set does), else it is set again."""
    changes: dict[str, Any] = {}
    if touched:
        defaults = client.patch(name, {f: None for f in touched})
        changes = {f: original[f] for f in touched if original[f] != defaults[f]}
    changes.update(write)
    if changes:
        client.patch(name, changes)


def restore(client: Client, name: str, original: dict[str, Any], touched: Sequence[str]) -> None:
    """After a failure: the collection keeps its policy, if the server still answers (the failure is reported)."""
    try:
        settle(client, name, original, touched, {})
    except (SystemExit, Exception) as exc:
        print(f"\nwarning: could not restore the think policy of {name} ({exc}); it was: {json.dumps(original)}")


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
    """The rows (direct first) and the collection's think policy at the end."""
    from tqdm import tqdm

    from service.tools.evaluation import judged_queries, latency_percentiles, score, search_body

    generations, fusions = load_grid(grid)
    client = Client(base_url, api_key, timeout_s + 30)
    detail = client.collection(collection)
    if detail is None or not detail["count"]:
        state = "does not exist" if detail is None else "is empty"
        raise SystemExit(
            f"collection {collection} {state}: load the corpus first, e.g. `thinksearch ingest "
            f"{Path(data_dir) / 'corpus.jsonl'} --collection {collection} --create` (or `thinksearch eval`)"
        )
    queries, qrels = judged_queries(Path(data_dir), split, max_queries)
    if not queries:
        raise SystemExit(f"no judged queries in {data_dir} for split {split}")
    original = detail["think"]
    touched = sorted({f for g in generations for f in g.fields}, key=GENERATION_FIELDS.index)
    # The server's own deadline comes before the client's timeout: a slow thought answers direct, marked degraded.
    deadline_ms = int(min(600_000, timeout_s * 1000))

    def body(mode: str, fusion: Fusion | None = None) -> Callable[[str], dict]:
        def make(text: str) -> dict:
            b = search_body(text, mode, None)
            if mode == "think":
                b["deadline_ms"] = deadline_ms
            if fusion is not None:
                b["fusion"] = fusion.body()
            return b

        return make

    def row(p: Pass, generation: str | None = None, fusion: str | None = None, **extra: Any) -> TuneRow:
        import pytrec_eval

        lat = latency_percentiles(p.seconds)
        got = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(p.run)
        each = {q: got.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels}
        return TuneRow(
            generation, fusion, len(queries), score(qrels, p.run), lat, dict(p.served), **extra, per_query=each
        )

    total = len(queries) * (1 + len(generations) * (1 + len(fusions)))
    rows: list[TuneRow] = []
    with tqdm(total=total, unit="search", desc="direct") as bar:
        rows.append(row(run_pass(client, collection, queries, body("direct"), concurrency, bar)))
        try:
            for gen in generations:
                if touched:
                    client.patch(collection, {f: gen.fields.get(f, original[f]) for f in touched})
                    time.sleep(POLICY_TTL_S)
                bar.set_description(f"{gen.label}: thinking")
                before = client.tokens()
                made = run_pass(client, collection, queries, body("think"), concurrency, bar)
                after = client.tokens()
                if not made.served.get("think"):
                    raise SystemExit(
                        f"{gen.label}: no search was answered in think mode ({dict(made.served)}): "
                        "is a thought worker attached (THINKER_URL)?"
                    )
                generated = made.states.get("miss", 0)
                per_query = (after - before) / generated if generated and None not in (before, after) else None
                cold = latency_percentiles(made.seconds)["p50_ms"]
                for fusion in fusions:
                    bar.set_description(f"{gen.label}: {fusion.label}")
                    p = run_pass(client, collection, queries, body("think", fusion), concurrency, bar)
                    policy = {**gen.fields, **fusion.policy()}
                    rows.append(
                        row(p, gen.label, fusion.label, cold_p50_ms=cold, tokens_per_query=per_query, policy=policy)
                    )
                if (spent := client.tokens()) is not None and after is not None and spent > after:
                    print(
                        f"\nwarning: {gen.label}: the fusion passes had {spent - after:.0f} tokens generated "
                        "(thoughts evicted from the cache, or other traffic on this gateway)"
                    )
        except BaseException:
            restore(client, collection, original, touched)
            raise

    direct = rows[0]
    for r in rows[1:]:
        diffs = [r.per_query[q] - direct.per_query[q] for q in qrels]
        r.vs_direct = (sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs))
    eligible = [r for r in rows[1:] if r.fully_thought]
    for r in rows[1:]:
        if not r.fully_thought:
            print(f"warning: {r.label}: not every query was answered in think mode ({r.served}): not a candidate")
    if not eligible:
        restore(client, collection, original, touched)
        raise SystemExit("no policy was measured on every query in think mode: nothing written")
    # Best think row by nDCG@10, then Recall@100 and MRR@10; on a full tie the cheaper one (fewer tokens).
    order = ("ndcg@10", "recall@100", "mrr@10")
    best = max(eligible, key=lambda r: (*(r.metrics[k] for k in order), -(r.tokens_per_query or 0.0)))
    thinks = best.metrics["ndcg@10"] > direct.metrics["ndcg@10"] + min_gain  # a tie goes to direct: it is cheaper
    (best if thinks else direct).winner = True
    # Thinking off still keeps the best think config, for searches that ask `think: true` themselves.
    write = {**best.policy, "enabled": thinks}
    settle(client, collection, original, touched, {} if dry_run else write)
    final = client.collection(collection)
    return rows, {
        "think": final["think"] if final else None,
        "best": best.label,
        "thinking": thinks,
        "written": None if dry_run else write,
        "original": original,
    }


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


def _public(row: TuneRow) -> dict[str, Any]:
    return {k: v for k, v in asdict(row).items() if k != "per_query"} | {"label": row.label}


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
    payload = {"when": when, **context, **outcome, "rows": [_public(r) for r in rows]}
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
    p.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY; PATCH needs scope admin")
    p.add_argument("--max-queries", type=int, default=None, help="the first N judged queries in sorted id order")
    p.add_argument("--grid", default=None, help="JSON {generation: [...] or {field: [values]}, fusion: [...]}")
    p.add_argument("--dry-run", action="store_true", help="measure only: the policy is left as it was")
    p.add_argument("--report", default=None, help="folder for report.md and report.json")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per search (also its think deadline)")
    p.add_argument("--min-gain", type=float, default=0.0, help="nDCG@10 thinking must add over direct to be on")
    p.set_defaults(func=_command)
