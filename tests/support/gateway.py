"""The ThinkSearch app served by a real uvicorn on loopback, in a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import uvicorn

from service.main import create_app
from service.settings import Settings
from tests.support.servers import free_port


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
        asyncio.run(self._server.serve())

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
