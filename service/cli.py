"""`thinksearch` command line: `serve` (default), `eval`, `warm`, `migrate`, `ingest`, `worker` and `export-onnx`."""

from __future__ import annotations

import argparse
import os
import sys

from service.clients.onnx_export import add_export_command
from service.tools.snapshot import add_snapshot_commands
from service.tools.tune import add_tune_command


def serve(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    from service.api.middleware import guarded_http_protocol
    from service.app import create_app
    from service.lifecycle import DrainingServer
    from service.observability.logs import configure_logging
    from service.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.qdrant_url and settings.qdrant_path != ":memory:":
        os.makedirs(settings.qdrant_path, exist_ok=True)
    app = create_app(settings)
    # Connection limits (docs/api.md, "HTTP connections"): httptools with the guards of service/api/middleware.py;
    # without httptools, h11 with what uvicorn offers (a header size cap, no header timeout or count).
    protocol = guarded_http_protocol(settings)
    if protocol is None:
        logging.getLogger("thinksearch").warning(
            "httptools is not installed: HTTP/1.1 by h11, without the header timeout and header count limit"
        )
    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        http=protocol or "h11",
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        timeout_keep_alive=settings.http_keep_alive_timeout_s,  # type: ignore[arg-type]  # a float works as well
        limit_concurrency=None if protocol is not None else settings.http_max_concurrency,
    )
    DrainingServer(config, app, drain_s=settings.shutdown_drain_s).run()


def _retrievals(value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    if not modes or set(modes) - {"dense", "sparse", "hybrid"}:
        raise argparse.ArgumentTypeError(f"{value!r}: comma-separated dense, sparse, hybrid")
    return modes


def evaluate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from service.tools.evaluation import MODES, evaluate_rows, markdown_table, write_report

    modes = args.modes.split(",") if args.modes else ["think" if args.think else "direct"]
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"--modes: unknown {sorted(unknown)}; choose from {', '.join(MODES)}")
    # Each retrieval mode given adds rows; none given sends no `retrieval` field (the server's default).
    retrievals = args.retrieval or [None]
    rows = evaluate_rows(
        base_url=args.url,
        data_dir=args.data,
        collection=args.collection,
        modes=modes,
        retrievals=retrievals,
        api_key=args.api_key or os.environ.get("THINKSEARCH_API_KEY"),
        split=args.split,
        max_queries=args.max_queries,
        concurrency=args.concurrency,
        skip_ingest=args.skip_ingest,
        reuse=args.reuse,
    )
    print(markdown_table(rows))
    if args.report:
        context = {"data": args.data, "collection": args.collection, "url": args.url, "concurrency": args.concurrency}
        print(f"report: {write_report(rows, Path(args.report), context)}")


def migrate(args: argparse.Namespace) -> None:
    """Documents and their vectors, read from the Edge folder and written to the target: nothing is re-embedded."""
    import asyncio

    from tqdm import tqdm

    from service.store.edge.store import EdgeStore
    from service.store.migrate import copy_collection
    from service.store.qdrant import VectorStore

    if bool(args.to_url) == bool(args.to_path):
        raise SystemExit("give one of --to-url or --to-path")

    async def run() -> None:
        source = EdgeStore(args.from_path)
        target = VectorStore.connect(url=args.to_url, api_key=args.api_key, path=args.to_path or "", timeout_s=60)
        try:
            for name in args.collection or await source.names():
                with tqdm(total=await source.count(name), desc=name, unit="doc") as bar:
                    copied = await copy_collection(source, target, name, bar.update)
                print(f"{name}: {copied} documents copied")
        finally:
            await source.aclose()
            await target.aclose()

    asyncio.run(run())


def warm(args: argparse.Namespace) -> None:
    """Start a warming job per chunk of a query log (one query per line) and follow it: a bar per query."""
    import time

    import httpx
    from tqdm import tqdm

    with open(args.queries_file, encoding="utf-8") as f:
        queries = [line.strip() for line in f if line.strip()]
    api_key = args.api_key or os.environ.get("THINKSEARCH_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    totals = {"queries": 0, "skipped": 0, "warmed": 0, "failed": 0, "worker_requests": 0}
    started = time.perf_counter()
    client = httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout)
    with client, tqdm(total=len(queries), unit="query", desc="warming") as bar:
        for i in range(0, len(queries), args.chunk):
            chunk = queries[i : i + args.chunk]
            response = client.post(f"/v1/collections/{args.collection}/warm", json={"queries": chunk})
            if response.status_code != 202:
                bar.close()
                sys.exit(f"warming failed: HTTP {response.status_code}: {response.text[:300]}")
            job, shown = response.json(), 0
            while True:  # follow the job: its counts move as queries finish
                progress = job["warm"]
                bar.update(progress["done"] - shown)
                shown = progress["done"]
                bar.set_postfix(
                    skipped=totals["skipped"] + progress["skipped"], failed=totals["failed"] + progress["failed"]
                )
                if job["status"] not in ("queued", "running"):
                    break
                time.sleep(0.25)
                response = client.get(f"/v1/jobs/{job['job_id']}")
                if response.status_code != 200:
                    bar.close()
                    sys.exit(f"following warming job {job['job_id']} failed: HTTP {response.status_code}")
                job = response.json()
            for key in totals:
                totals[key] += progress[key]
            if job["status"] != "succeeded":
                bar.close()
                sys.exit(f"warming job {job['job_id']} {job['status']}: {job.get('error') or ''}")
    elapsed = time.perf_counter() - started
    print(
        f"{totals['queries']} queries in {elapsed:.1f} s ({totals['queries'] / elapsed:.1f} queries/s): "
        f"{totals['warmed']} warmed, {totals['skipped']} already cached, {totals['failed']} failed; "
        f"{totals['worker_requests']} worker requests"
    )


# --- bulk ingestion (issue 5) ---


def worker(args: argparse.Namespace) -> None:
    import asyncio

    from service.observability.logs import configure_logging
    from service.settings import get_settings
    from service.worker_process import refusal, run_worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if reason := refusal(settings):
        raise SystemExit(reason)
    asyncio.run(run_worker(settings, metrics_port=args.metrics_port))


def ingest(args: argparse.Namespace) -> None:
    from service.tools.upload import run_ingest

    raise SystemExit(
        run_ingest(
            base_url=args.url,
            path=args.file,
            collection=args.collection,
            create=args.create,
            api_key=args.api_key or os.environ.get("THINKSEARCH_API_KEY"),
        )
    )


def add_ingest_commands(sub: argparse._SubParsersAction) -> None:
    p_worker = sub.add_parser("worker", help="run an ingestion worker process (needs REDIS_URL and QDRANT_URL)")
    p_worker.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    p_worker.set_defaults(func=worker)

    p_ingest = sub.add_parser("ingest", help="stream a JSONL file (BEIR corpus.jsonl accepted) to the bulk API")
    p_ingest.add_argument("file", help="one JSON document per line: id or _id, text, title?, other fields = metadata")
    p_ingest.add_argument("--collection", required=True)
    p_ingest.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    p_ingest.add_argument("--url", default="http://127.0.0.1:8000")
    p_ingest.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY")
    p_ingest.set_defaults(func=ingest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="thinksearch", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    p_serve = sub.add_parser("serve", help="run the HTTP service (configured by environment variables)")
    p_serve.add_argument("--host", default=None)
    p_serve.add_argument("--port", type=int, default=None)
    p_serve.set_defaults(func=serve)

    p_eval = sub.add_parser("eval", help="ingest a BEIR folder through the REST API and print nDCG@10 etc.")
    p_eval.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    p_eval.add_argument("--collection", required=True)
    p_eval.add_argument("--url", default="http://127.0.0.1:8000")
    p_eval.add_argument("--think", action="store_true", help="search in think mode (default: direct)")
    p_eval.add_argument("--modes", default=None, help="comma-separated search modes, e.g. direct,think (one row each)")
    p_eval.add_argument(
        "--retrieval",
        type=_retrievals,
        default=None,
        help="comma-separated dense,sparse,hybrid: one row each (x --modes); sent in each search (default: the "
        "service's, hybrid where the collection has a sparse side)",
    )
    p_eval.add_argument("--report", default=None, help="folder for report.md and report.json")
    p_eval.add_argument("--reuse", action="store_true", help="keep a collection that already holds the whole corpus")
    p_eval.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY")
    p_eval.add_argument("--split", default="test")
    p_eval.add_argument("--max-queries", type=int, default=None)
    p_eval.add_argument("--concurrency", type=int, default=4)
    p_eval.add_argument("--skip-ingest", action="store_true", help="the collection is already loaded")
    p_eval.set_defaults(func=evaluate)

    p_migrate = sub.add_parser("migrate", help="copy embedded Qdrant Edge collections to a Qdrant server")
    p_migrate.add_argument("--from-path", required=True, help="the Edge store folder (QDRANT_PATH)")
    p_migrate.add_argument("--to-url", help="Qdrant server URL (QDRANT_URL of the new deployment)")
    p_migrate.add_argument("--to-path", help="or a qdrant-client local-mode folder")
    p_migrate.add_argument("--api-key", default=os.environ.get("QDRANT_API_KEY"))
    p_migrate.add_argument("--collection", action="append", help="repeatable; default: every collection")
    p_migrate.set_defaults(func=migrate)
    p_warm = sub.add_parser("warm", help="think, embed and cache a query log ahead of traffic (one query a line)")
    p_warm.add_argument("queries_file")
    p_warm.add_argument("--collection", required=True)
    p_warm.add_argument("--url", default="http://127.0.0.1:8000")
    p_warm.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY")
    p_warm.add_argument(
        "--chunk", type=int, default=1000, help="queries per job, one after the other (<= MAX_WARM_QUERIES_PER_REQUEST)"
    )
    p_warm.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    p_warm.set_defaults(func=warm)
    add_ingest_commands(sub)
    add_tune_command(sub)
    add_export_command(sub)
    add_snapshot_commands(sub)

    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    args.func(args)


if __name__ == "__main__":
    main()
