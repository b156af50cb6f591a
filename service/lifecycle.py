"""Graceful shutdown, as Kubernetes expects it.

On SIGTERM, /readyz answers 503 at once while requests are still served for SHUTDOWN_DRAIN_S, so endpoint
controllers and load balancers take the replica out before it stops listening. Then uvicorn stops accepting
connections and gives in-flight requests SHUTDOWN_GRACE_S to finish, and the lifespan cancels background generations
and closes every client. SIGINT (Ctrl-C in a terminal) skips the drain; a second signal ends the drain early.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("thinksearch")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, *, drain_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_s = drain_s
        self._drain: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.draining = True
        if sig != signal.SIGTERM or self._drain is not None or self._drain_s <= 0:
            super().handle_exit(sig, frame)
            return
        log.info("SIGTERM: not ready any more; serving for %.1f s more, then shutting down", self._drain_s)
        # A timer thread only sets uvicorn's exit flag, which its main loop polls.
        self._drain = threading.Timer(self._drain_s, super().handle_exit, args=(sig, frame))
        self._drain.daemon = True
        self._drain.start()
