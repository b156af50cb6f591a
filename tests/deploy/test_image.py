"""The container image, built and run by the real Docker engine (`--network host` only).

Builds the `local` target (and `slim` and `local-torch`, sharing its builder layers) from the locally bootstrapped
debian:bookworm-slim, runs `local` on a free loopback port with a read-only root filesystem (as the chart does),
waits for its HEALTHCHECK, then creates a collection, ingests and searches through it; checks it runs as
non-root, embeds on ONNX Runtime without torch, carries no build-time CA bundle, and stops cleanly on SIGTERM.
Skips (never passes) only when no engine can start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.docker_engine import (
    EngineUnavailable,
    build,
    docker,
    docker_engine,
    image_size,
    run_detached,
)
from tests.support.servers import REPO_ROOT, free_port

BASE_IMAGE = "debian:bookworm-slim"
BUILD_EXTRA = REPO_ROOT / "deploy" / "docker" / "build-extra"
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu-*.whl"

pytestmark = pytest.mark.timeout(1800)
# Build-stage paths, and the CA bundle anywhere it could have been copied to, must be absent from a final image.
FIND_BUILD_LEFTOVERS = """
import os
found = [p for p in ("/build-extra", "/src") if os.path.exists(p)]
for root in ("/app", "/etc", "/opt", "/root", "/tmp", "/usr/local"):
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if f == "pip-ca.crt"]
print(found)
"""


def _pip_config() -> dict[str, str]:
    """`pip config list` as {key: value} (keys like `global.cert`, `:env:.find-links`)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    config: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip().strip("'\"")
    return config


def _config_values(config: dict[str, str], name: str) -> list[str]:
    return [v for k, v in config.items() if k.endswith(f".{name}") for v in v.split()]


def _stage_build_extras() -> dict[str, str]:
    """Copy the machine's pip CA bundle and the CPU torch wheel into the build context; return the build args."""
    config = _pip_config()
    BUILD_EXTRA.mkdir(parents=True, exist_ok=True)
    for cert in _config_values(config, "cert"):
        if Path(cert).is_file():
            shutil.copyfile(cert, BUILD_EXTRA / "pip-ca.crt")
            break
    wheels = [w for d in _config_values(config, "find-links") for w in Path(d).glob(TORCH_WHEEL_GLOB)]
    if not wheels:
        return {}  # the Dockerfile's default: PyTorch's CPU index
    (BUILD_EXTRA / "wheels").mkdir(exist_ok=True)
    target = BUILD_EXTRA / "wheels" / wheels[0].name
    if not target.exists():
        try:
            os.link(wheels[0], target)
        except OSError:
            shutil.copyfile(wheels[0], target)
    return {"TORCH_INDEX_URL": "", "TORCH_FIND_LINKS": "/build-extra/wheels"}


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    try:
        with docker_engine() as started:
            print(f"\nDocker engine: {'started by this test' if started else 'already running'}")
            yield
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="module")
def images(engine: None) -> dict[str, str]:
    t0 = time.monotonic()
    subprocess.run([str(REPO_ROOT / "deploy/docker/bootstrap-base.sh"), BASE_IMAGE], check=True, timeout=900)
    print(f"base image {BASE_IMAGE} ready in {time.monotonic() - t0:.1f} s")
    build_args = _stage_build_extras()
    # Fixed tags, kept after the run: the next build on this machine reuses their layers.
    tags = {"local": "thinksearch:test-local", "slim": "thinksearch:test-slim", "local-torch": "thinksearch:test-torch"}
    try:
        for target in ("local", "slim", "local-torch"):
            seconds, _ = build(REPO_ROOT, tags[target], target, build_args)
            size = image_size(tags[target]) / 2**20
            print(f"built {target}: {seconds:.1f} s, {size:.0f} MiB (load {os.getloadavg()[0]:.2f})")
    finally:
        (BUILD_EXTRA / "pip-ca.crt").unlink(missing_ok=True)  # never left behind
    return tags


@pytest.fixture(scope="module")
def container(images: dict[str, str]) -> Iterator[dict[str, str]]:
    port = free_port()
    name = f"thinksearch-test-{uuid.uuid4().hex[:8]}"
    run_detached(
        images["local"],
        # As the chart runs it: read-only root filesystem; /tmp and the data directory writable by the app user.
        options=[
            "--name",
            name,
            "-e",
            f"PORT={port}",
            "--health-interval",
            "2s",
            "--health-start-period",
            "120s",
            "--read-only",
            "--tmpfs",
            "/tmp:uid=10001,gid=10001",
            "--tmpfs",
            "/app/data:uid=10001,gid=10001",
        ],  # fmt: skip
    )
    try:
        yield {"name": name, "url": f"http://127.0.0.1:{port}"}
    finally:
        docker("rm", "-f", name, check=False)


def _wait_healthy(name: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name))
        status = state.get("Health", {}).get("Status", "none")
        if status == "healthy":
            return
        if not state["Running"]:
            break
        time.sleep(1)
    logs = docker("logs", "--tail", "40", name, check=False, stderr=True)
    raise AssertionError(f"container not healthy (health {status!r}):\n{logs}")


def test_image_metadata(images: dict[str, str]) -> None:
    for tag in images.values():
        config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", tag))
        assert config["User"] not in ("", "0", "root", "0:0")
        assert "HOST=0.0.0.0" in config["Env"]
        assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
        assert config["Entrypoint"] == ["thinksearch"] and config["Cmd"] == ["serve"]
        # Nothing of the build context's extras (CA bundle, wheels) in the final image.
        leftovers = docker(
            "run", "--rm", "--network", "host", "--entrypoint", "python3", tag, "-c", FIND_BUILD_LEFTOVERS,
            timeout=180,
        )  # fmt: skip
        assert leftovers == "[]"


def test_slim_has_no_torch(images: dict[str, str]) -> None:
    out = docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python3", images["slim"], "-c",
        "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('service.app') is not None)",
    )  # fmt: skip
    assert out == "True True"


def test_local_image_embeds_on_onnx_without_torch(images: dict[str, str]) -> None:
    """The in-process image: ONNX Runtime, the tokenizer and the exported model; no torch, no sentence-transformers."""
    out = docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python3", images["local"], "-c",
        "import importlib.util as u, os; print([u.find_spec(m) is None for m in ('torch', 'sentence_transformers',"
        " 'transformers')], [u.find_spec(m) is not None for m in ('onnxruntime', 'tokenizers')],"
        " sorted(os.listdir(os.environ['EMBEDDER_ONNX_DIR'])), os.environ['EMBEDDER_BACKEND'])",
    )  # fmt: skip
    assert out == "[True, True, True] [True, True] ['model.onnx', 'thinksearch.json', 'tokenizer.json'] onnx"


def test_the_torch_image_keeps_the_torch_backend(images: dict[str, str]) -> None:
    out = docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python3", images["local-torch"], "-c",
        "import os, torch, sentence_transformers; print(torch.version.cuda, os.environ['EMBEDDER_BACKEND'])",
        timeout=180,
    )  # fmt: skip
    assert out == "None torch"


def test_local_image_serves_and_stops_on_sigterm(container: dict[str, str]) -> None:
    name, url = container["name"], container["url"]
    _wait_healthy(name)
    assert docker("exec", name, "id", "-u") != "0"

    with httpx.Client(base_url=url, timeout=120.0) as client:
        r = client.post("/v1/collections", json={"name": "imagetest"})
        assert r.status_code == 201, r.text
        assert r.json()["dimension"] == 384  # the baked-in MiniLM
        docs = [
            {"id": "a", "text": "Mitochondria produce most of the cell's chemical energy."},
            {"id": "b", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris."},
        ]
        r = client.post("/v1/collections/imagetest/documents", json={"documents": docs})
        assert r.status_code == 200 and r.json()["upserted"] == 2, r.text
        r = client.post("/v1/collections/imagetest/search", json={"query": "powerhouse of the cell", "top_k": 2})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["id"] == "a"
    # The serving process (PID 1) embeds with ONNX Runtime's library, and never loaded torch's.
    maps = docker("exec", name, "cat", "/proc/1/maps")
    assert "libonnxruntime" in maps and "libtorch" not in maps

    docker("kill", "--signal", "TERM", name)
    exit_code = docker("wait", name, timeout=60)
    logs = docker("logs", name, stderr=True)
    assert exit_code == "0", logs[-2000:]
    assert "Finished server process" in logs or "Shutting down" in logs, logs[-2000:]
