"""Prometheus config and alert rules checked by Debian's promtool: syntax, and one unit-test case per alert."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.servers import REPO_ROOT

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = {
    "ThinkSearchSearchLatencyP99OverBudget",
    "ThinkSearchErrorRatioHigh",
    "ThinkSearchDegradedRatioHigh",
    "ThinkSearchThinkerDown",
    "ThinkSearchCacheUnavailable",
    "ThinkSearchIngestionLagGrowing",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does it)")
    return path


def _run(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_check_config(promtool: str) -> None:
    assert "SUCCESS" in _run(promtool, "check", "config", "prometheus.yml")


def test_check_rules(promtool: str) -> None:
    assert "SUCCESS: 6 rules found" in _run(promtool, "check", "rules", "alerts.yml")


def test_rule_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in _run(promtool, "test", "rules", "alerts_test.yml")


def test_every_alert_has_a_firing_case() -> None:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    defined = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert defined == ALERTS
    cases = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert firing == ALERTS
