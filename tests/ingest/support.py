"""Helpers of the ingestion tests: SciFact documents as NDJSON, job polling, service processes."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from service.tools.evaluation import read_jsonl
from tests.support.servers import _ManagedProcess, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
NDJSON = {"content-type": "application/x-ndjson"}


def scifact(n: int, offset: int = 0, text_chars: int | None = None) -> list[dict]:
    """n SciFact documents in the service's shape; `text_chars` cuts abstracts short (the embedder's time on two
    shared cores is what bounds these tests, and nothing they check depends on the abstracts' length)."""
    rows = itertools.islice(read_jsonl(SCIFACT / "corpus.jsonl"), offset, offset + n)
    return [{"id": d["_id"], "title": d["title"], "text": d["text"][:text_chars]} for d in rows]


def ndjson(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 900.0, until=None) -> dict:
    """Polls until the job ends (or `until(job)` holds); returns the last job state."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200:
            job = r.json()
            if until(job) if until else job["status"] not in ("queued", "running"):
                return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {r.text[:300]}")
        time.sleep(0.5)


class ServiceProcess(_ManagedProcess):
    """`python -m service.cli <command>` as its own process, the worktree on PYTHONPATH."""

    def __init__(self, command: str, env: Mapping[str, str]) -> None:
        self.name = command
        super().__init__()
        self.command = command
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            **env,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn([sys.executable, "-m", "service.cli", self.command], env=self.env)
        if self.command == "serve":
            wait_http(f"{self.url}/healthz", timeout=180, proc=self._proc)

    def kill(self) -> None:
        """SIGKILL, no shutdown at all: what a crashed pod looks like."""
        import signal

        self._signal_all(signal.SIGKILL)
        assert self._proc is not None
        self._proc.wait(timeout=10)
        self._proc = None
