"""A real Prometheus server (Debian's `prometheus`) on loopback, scraping the given targets every second."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

import httpx
import yaml

from tests.support.servers import _ManagedProcess, free_port, wait_http


class PrometheusServer(_ManagedProcess):
    name = "prometheus"

    def __init__(self, targets: Mapping[str, str]) -> None:
        """targets: {job name: "127.0.0.1:port"}."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found on PATH; install it with: apt-get install -y prometheus")
        super().__init__()
        self.binary = binary
        self.port = free_port()
        self.targets = dict(targets)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in self.targets.items()
            ],
        }
        config_path = self._tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._spawn(
            [
                self.binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self._tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )
        wait_http(f"{self.url}/-/ready", 60, proc=self._proc)

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{body}")
        return body["data"]["result"]

    def targets_up(self) -> dict[str, bool]:
        active = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] == "up" for t in active}
