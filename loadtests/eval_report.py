"""`make eval-report`: `thinksearch eval` over SciFact in direct and think mode, as a markdown table and JSON.

Without --url it brings up what it needs on loopback: a vLLM CPU server as the thinker (--thinker real:
SmolLM2-135M-Instruct from `make real-thinker`, the default once prepared; --thinker tiny: the generated random-weight
model, which proves the wiring only) and ThinkSearch on its own port with its own QDRANT_PATH (default
data/eval-report/qdrant, kept between runs so a second run reuses the ingested collection instead of re-embedding
5,183 documents). With --url it evaluates a running deployment, whatever thinker it has. Writes
loadtests/results/<timestamp>-eval/report.md and report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from service.tools.evaluation import MODES, evaluate_rows, markdown_table, write_report
from tests.support.gateway import spawn_gateway
from tests.support.realmodel import PREPARE_HINT, is_prepared, real_thinker_dir, real_vllm_server
from tests.support.servers import REPO_ROOT, VLLMServer, free_port
from tests.support.tinymodel import build_tiny_model

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
RESULTS = REPO_ROOT / "loadtests" / "results"


@contextlib.contextmanager
def local_stack(args: argparse.Namespace) -> Iterator[str]:
    """The vLLM worker (args.thinker) and a gateway with a persistent embedded store; yields the gateway's URL."""
    Path(args.qdrant_path).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.thinker == "real":
            server = real_vllm_server()
        else:
            server = VLLMServer(build_tiny_model(Path(tmp) / "tiny"), "tiny-think")
        with server as vllm:
            port = free_port()
            env = {
                "QDRANT_PATH": str(Path(args.qdrant_path).resolve()),
                "THINKER_URL": vllm.base_url,
                "THINK_MAX_TOKENS": str(args.max_tokens),
                "LOG_LEVEL": "WARNING",
            }
            if args.think_n:
                env["THINK_N"] = str(args.think_n)
            gateway = spawn_gateway(port, env, log_path=Path(tmp) / "gateway.log")
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                gateway.terminate()
                gateway.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running ThinkSearch (else a local stack is started)")
    parser.add_argument("--data", default=str(SCIFACT))
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--modes", default="direct,think")
    parser.add_argument("--retrieval", default=None, help="comma-separated retrieval modes: rows x --modes")
    parser.add_argument("--max-queries", type=int, default=None, help="default: every judged test query (300)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--api-key", default=os.environ.get("THINKSEARCH_API_KEY"))
    parser.add_argument("--qdrant-path", default=str(REPO_ROOT / "data" / "eval-report" / "qdrant"))
    parser.add_argument("--think-n", type=int, default=None, help="local stack: THINK_N (default: the profile's)")
    parser.add_argument("--max-tokens", type=int, default=64, help="local stack: THINK_MAX_TOKENS")
    parser.add_argument(
        "--thinker",
        choices=("tiny", "real"),
        default=None,
        help="local stack: SmolLM2 (real; default once `make real-thinker` prepared it) or the generated tiny model",
    )
    parser.add_argument("--out", default=None, help="report folder (default loadtests/results/<timestamp>-eval)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if args.thinker is None:
        args.thinker = "real" if is_prepared() else "tiny"
        if args.thinker == "tiny" and not args.url:
            print(f"note: no prepared SmolLM2 at {real_thinker_dir()}, thinking with the tiny model; {PREPARE_HINT}")
    elif args.thinker == "real" and not args.url and not is_prepared():
        parser.error(f"--thinker real: no prepared SmolLM2 at {real_thinker_dir()}; {PREPARE_HINT}")

    out = Path(args.out) if args.out else RESULTS / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-eval"
    before = os.getloadavg()
    stack: contextlib.AbstractContextManager[str] = contextlib.nullcontext(args.url) if args.url else local_stack(args)
    with stack as url:
        rows = evaluate_rows(
            base_url=url,
            data_dir=args.data,
            collection=args.collection,
            modes=modes,
            retrievals=args.retrieval.split(",") if args.retrieval else [None],
            api_key=args.api_key,
            max_queries=args.max_queries,
            concurrency=args.concurrency,
            reuse=True,
        )
    after = os.getloadavg()
    n = args.think_n or "the profile's default"
    model = {
        "real": f"SmolLM2-135M-Instruct bfloat16 ({real_thinker_dir()})",
        "tiny": "generated tiny random-weight model",
    }[args.thinker]
    thinker = "the deployment's" if args.url else f"vLLM CPU, {model}, {args.max_tokens} new tokens, n={n}"
    context = {
        "command": " ".join(sys.argv),
        "target": args.url or "local stack (ThinkSearch, embedded Qdrant Edge, in-process MiniLM)",
        "thinker": thinker,
        "data": args.data,
        "concurrency": f"{args.concurrency} searches in flight; latency is client-side wall time per search",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load average (1 min) before → after": f"{before[0]:.2f} → {after[0]:.2f}",
    }
    print(markdown_table(rows))
    print(f"report: {write_report(rows, out, context)}")


if __name__ == "__main__":
    main()
