"""The real Docker engine for the image test: use a running one, or start `dockerd` and stop it afterwards.

Only host networking is used (`--bridge=none --iptables=false`; every build and run with `--network host`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PID_FILE = Path("/var/run/docker.pid")


class EngineUnavailable(RuntimeError):
    """No engine runs and none can be started here (the image test skips with this message)."""


def docker(
    *args: str, check: bool = True, timeout: float = 60.0, env: dict[str, str] | None = None, stderr: bool = False
) -> str:
    """Run the docker CLI; its stdout (plus stderr with stderr=True, e.g. for `docker logs`)."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return (proc.stdout + proc.stderr if stderr else proc.stdout).strip()


def engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_engine(start_timeout: float = 60.0) -> Iterator[bool]:
    """Yields True if this call started the daemon (and then stops it on exit); raises EngineUnavailable."""
    if engine_up():
        yield False
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or shutil.which("docker") is None:
        raise EngineUnavailable("the Docker engine is not installed (apt-get install docker.io; .ci/run does it)")
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd must start as root and no engine is running")
    log = Path(tempfile.mkdtemp(prefix="thinksearch-dockerd-")) / "dockerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [dockerd, "--bridge=none", "--iptables=false", f"--pidfile={PID_FILE}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not engine_up():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise EngineUnavailable(f"dockerd did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield True
    finally:
        # SIGTERM lets dockerd stop its containerd and unmount cleanly; it removes its pid file itself.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(log.parent, ignore_errors=True)


def build(
    context: Path, tag: str, target: str, build_args: dict[str, str], timeout: float = 1200.0
) -> tuple[float, str]:
    """`docker build` with the classic builder (BuildKit's host network needs an entitlement); returns seconds, log."""
    argv: list[str] = ["build", "--network", "host", "--target", target, "-t", tag]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    t0 = time.monotonic()
    out = docker(*argv, str(context), timeout=timeout, env=env)
    return time.monotonic() - t0, out


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag))


def run_detached(image: str, args: Sequence[str] = (), options: Sequence[str] = ()) -> str:
    return docker("run", "-d", "--network", "host", *options, image, *args)
