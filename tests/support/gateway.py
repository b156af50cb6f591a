"""The ThinkSearch app served by a real uvicorn on loopback, in a thread of the test process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from service.app import create_app
from service.settings import Settings
from tests.support.servers import REPO_ROOT, free_port, wait_http

T = TypeVar("T")


class Gateway:
    """`with Gateway(settings) as gw: gw.client.post(...)`; one app, one event loop, a real HTTP socket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"gateway-{self.port}", daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=120.0)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._server.serve()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the app's own event loop (its clients and batchers belong to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Gateway:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=30)


def spawn_gateway(port: int, env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """`thinksearch serve` as its own process on `port` (this checkout's code), started and healthy.

    `env` adds to (and overrides) this process' environment; the store and dependency variables not given are
    cleared, so a stray REDIS_URL or THINKER_URL cannot leak in. Same session as the caller (process group only):
    see tests/support/servers.py on CPU autogroups.
    """
    clean = {k: v for k, v in os.environ.items() if k not in _DEPENDENCY_VARIABLES}
    environment = {**clean, "PYTHONPATH": str(REPO_ROOT), "QDRANT_PATH": ":memory:", **env}
    out = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    finally:
        if log_path is not None:
            out.close()  # type: ignore[union-attr]
    wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc=proc)
    return proc


_DEPENDENCY_VARIABLES = ("REDIS_URL", "THINKER_URL", "QDRANT_URL", "EMBEDDER_URL", "API_KEYS", "RATE_LIMITS")
