"""docker-compose.yml and its override files, parsed and validated by a real Compose (Debian's docker-compose
`config`), then the resolved stack checked: health-gated start order, durable Redis, GPUs only where meant."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.servers import REPO_ROOT

GPU = ["docker-compose.yml", "docker-compose.override.yml"]
CPU = ["docker-compose.yml", "deploy/compose/cpu.yml"]
O1 = [*GPU, "deploy/compose/o1.yml"]


def compose_config(files: list[str], *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose; .ci/run does it)")
    argv = [binary, "--project-directory", str(REPO_ROOT)]
    for f in files:
        argv += ["-f", str(REPO_ROOT / f)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "THINKSEARCH_"))}
    env = {**base_env, "GRAFANA_ADMIN_PASSWORD": "test-only", **(env or {})}
    return subprocess.run([*argv, *extra, "config"], capture_output=True, text=True, env=env, timeout=60)


def resolved(files: list[str], *extra: str) -> dict[str, Any]:
    proc = compose_config(files, *extra)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["services"]


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def mount_targets(service: dict[str, Any]) -> set[str]:
    """Container paths of a service's volumes (long syntax, or docker-compose 1.x's "source:target:mode")."""
    return {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service.get("volumes", [])}


def test_default_stack() -> None:
    services = resolved(GPU)
    assert set(services) == {
        "gateway",
        "worker",
        "vllm-think",
        "vllm-embed",
        "qdrant",
        "redis",
        "prometheus",
        "grafana",
    }
    # `config` lists every service; only the pooling embedder waits for a profile.
    assert [n for n, s in services.items() if s.get("profiles")] == ["vllm-embed"]
    assert services["vllm-embed"]["profiles"] == ["o1"]
    gateway = services["gateway"]
    assert gateway["depends_on"] == {
        "qdrant": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "vllm-think": {"condition": "service_healthy"},
    }
    assert gateway["command"] == ["serve"] and services["worker"]["command"][:1] == ["worker"]
    for name in ("gateway", "worker"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0" and env["QDRANT_URL"] == "http://qdrant:6333"
    for name in ("vllm-think", "qdrant", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert "/health" in " ".join(services["vllm-think"]["healthcheck"]["test"])
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert gpu_devices(services["vllm-think"])[0]["capabilities"] == ["gpu"]
    assert "/root/.cache/huggingface" in mount_targets(services["vllm-think"])
    grafana_mounts = mount_targets(services["grafana"])
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= grafana_mounts
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name


def test_cpu_override_has_no_gpu() -> None:
    services = resolved(CPU)
    assert all(not gpu_devices(s) for s in services.values())
    assert services["vllm-think"]["build"]["dockerfile"] == "vllm-cpu.Dockerfile"


def test_o1_profile_adds_the_pooling_embedder() -> None:
    services = resolved(O1, "--profile", "o1")
    embed = services["vllm-embed"]
    assert "pooling" in embed["command"] and gpu_devices(embed)
    for name in ("gateway", "worker"):
        env = services[name]["environment"]
        assert env["EMBEDDER_URL"] == "http://vllm-embed:8000/v1" and env["THINK_PROFILE"] == "o1"
        assert services[name]["build"]["target"] == "slim"
    assert services["gateway"]["depends_on"]["vllm-embed"] == {"condition": "service_healthy"}


def test_grafana_password_is_required() -> None:
    proc = compose_config(GPU, env={"GRAFANA_ADMIN_PASSWORD": ""})
    assert proc.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in proc.stderr


def test_prometheus_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    targets = {t for job in jobs for sc in job.get("static_configs", []) for t in sc["targets"]}
    # Every replica of a scaled service, by its DNS name: the worker's command must serve that port.
    discovered = {f"{n}:{sd['port']}" for job in jobs for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    services = resolved(O1, "--profile", "o1")
    assert {t.split(":")[0] for t in targets | discovered} <= set(services)
    assert {"gateway:8000", "vllm-think:8000", "qdrant:6333"} <= targets
    assert discovered == {"worker:9100"}
    command = services["worker"]["command"]
    assert command[command.index("--metrics-port") + 1] == "9100"
