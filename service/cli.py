"""`thinksearch` command line: `serve` (default), `eval`, `ingest` and `worker`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from service.api.middleware import RequestIdLogFilter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our middleware logs one line per request with its id; uvicorn's own access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.main import create_app
    from service.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    if not settings.qdrant_url and settings.qdrant_path != ":memory:":
        os.makedirs(settings.qdrant_path, exist_ok=True)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def evaluate(args: argparse.Namespace) -> None:
    from service.evaluation import run_evaluation

    run_evaluation(
        base_url=args.url,
        data_dir=args.data,
        collection=args.collection,
        think=args.think,
        api_key=args.api_key or os.environ.get("THINKSEARCH_API_KEY"),
        split=args.split,
        max_queries=args.max_queries,
        concurrency=args.concurrency,
        skip_ingest=args.skip_ingest,
    )


# --- bulk ingestion (issue 5) ---


def worker(args: argparse.Namespace) -> None:
    import asyncio

    from service.ingest.runner import refusal, run_worker
    from service.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    if reason := refusal(settings):
        raise SystemExit(reason)
    asyncio.run(run_worker(settings, metrics_port=args.metrics_port))


def ingest(args: argparse.Namespace) -> None:
    from service.ingest.upload import run_ingest

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
    p_eval.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY")
    p_eval.add_argument("--split", default="test")
    p_eval.add_argument("--max-queries", type=int, default=None)
    p_eval.add_argument("--concurrency", type=int, default=4)
    p_eval.add_argument("--skip-ingest", action="store_true", help="the collection is already loaded")
    p_eval.set_defaults(func=evaluate)

    add_ingest_commands(sub)

    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    args.func(args)


if __name__ == "__main__":
    main()
