"""A real gateway process (`thinksearch serve`): SIGTERM during a burst drains without failing a request, and the
JSON access log carries each request's fields but never a key or (unless asked) a query."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.gateway import spawn_gateway
from tests.support.servers import free_port

KEY = "lifecycle-secret-key-0001"
QUERY = "which celestial body pulls the oceans"
DOCS = [{"id": f"d{i}", "text": f"Document {i} about tides, moons and oceans."} for i in range(20)]


def start_gateway(port: int, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    return spawn_gateway(port, {"API_KEYS": json.dumps({KEY: ["admin"]}), "LOG_FORMAT": "json", **env}, log_path)


def test_sigterm_drains_a_burst_and_logs_json():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "gateway.log"
        proc = start_gateway(port, log_path, SHUTDOWN_DRAIN_S="3", SHUTDOWN_GRACE_S="20")
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
                assert c.post("/v1/collections", json={"name": "life"}).status_code == 201
                assert c.post("/v1/collections/life/documents", json={"documents": DOCS}).status_code == 200
                assert c.get("/readyz").status_code == 200

            async def burst_then_sigterm() -> tuple[list[int], list[tuple[float, int]]]:
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
                    searches = [
                        asyncio.create_task(client.post("/v1/collections/life/search", json={"query": f"{QUERY} {i}"}))
                        for i in range(48)
                    ]
                    await asyncio.sleep(0.05)  # the burst is in flight
                    proc.send_signal(signal.SIGTERM)
                    sigterm_at = time.monotonic()
                    probes = []
                    for _ in range(10):  # within the drain window: not ready, still serving
                        r = await client.get("/readyz")
                        probes.append((time.monotonic() - sigterm_at, r.status_code))
                        await asyncio.sleep(0.1)
                    results = await asyncio.gather(*searches)
                    return [r.status_code for r in results], probes

            statuses, probes = asyncio.run(burst_then_sigterm())
            returncode = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log_lines = log_path.read_text().splitlines()

    assert statuses == [200] * 48  # no request in flight failed
    assert probes and all(code == 503 for _, code in probes)
    assert returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown

    records = [json.loads(line) for line in log_lines if line.startswith("{")]
    assert records, log_lines[-20:]
    text = "\n".join(log_lines)
    assert KEY not in text and QUERY not in text
    access = [r for r in records if r.get("route") == "/v1/collections/{name}/search"]
    assert len(access) == 48
    sample = access[0]
    assert sample["status"] == 200 and sample["method"] == "POST" and sample["latency_ms"] > 0
    assert sample["request_id"] != "-" and sample["key_id"].startswith("key:")
    assert sample["mode"] == "direct" and sample["degraded_reason"] is None and "embed" in sample["timings_ms"]
    assert any("SIGTERM" in r["message"] for r in records)
