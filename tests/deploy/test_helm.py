"""The Helm chart, linted and rendered by Helm's own engine (helm-python-sdk), every manifest checked against
the Kubernetes schemas (kubernetes-validate), plus what matters in production asserted directly.

Chart dependencies (Qdrant, Redis) cannot be downloaded here: renders disable them and exercise the
external-URL path; the lint's only allowed warning is their absence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.support.servers import REPO_ROOT

CHART = REPO_ROOT / "helm" / "thinksearch"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
PRODUCTION_VALUES = Path(__file__).parent / "values" / "production.yaml"
KUBE_VERSION = "1.30.0"
helm_python.disable_logging()  # its INFO line on every load (the dashboards symlink) is noise here
# Custom resources have no schema in kubernetes-validate; checked structurally below.
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
EXTERNAL = {
    "qdrant": {"enabled": False},
    "externalQdrant": {"url": "http://qdrant.search.svc:6333"},
    "redis": {"enabled": False},
    "externalRedis": {"url": "redis://redis.search.svc:6379/0"},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    files = helm_python.Chart.load(CHART).render(values, name="ts", namespace="search", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


VALUE_SETS = {
    "default-external": EXTERNAL,
    "production": _merge(yaml.safe_load(PRODUCTION_VALUES.read_text()), {}),
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(VALUE_SETS[request.param])


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_lint_clean() -> None:
    for values in VALUE_SETS.values():
        result = helm_python.lint(CHART, values, strict=False, namespace="search", kube_version=KUBE_VERSION)
        assert result["errors"] == []
        serious = [
            m for m in result["messages"] if m["severity"] >= 2 and "missing these dependencies" not in m["error"]
        ]
        assert serious == [], serious


def test_schema_rejects_latest_and_inline_secret_env() -> None:
    with pytest.raises(helm_python.HelmError, match="tag"):
        render(_merge(EXTERNAL, {"image": {"tag": "latest"}}))
    with pytest.raises(helm_python.HelmError):
        render(_merge(EXTERNAL, {"config": {"API_KEYS": '{"k": ["admin"]}'}}))


def test_missing_external_url_is_an_error() -> None:
    with pytest.raises(helm_python.HelmError, match="externalQdrant.url"):
        render(_merge(EXTERNAL, {"externalQdrant": {"url": ""}}))


def test_every_manifest_matches_kubernetes_schema(manifests: list[dict[str, Any]]) -> None:
    kinds = set()
    for doc in manifests:
        kinds.add(doc["kind"])
        if doc["kind"] in CRD_KINDS:
            endpoints = doc["spec"].get("endpoints") or doc["spec"].get("podMetricsEndpoints")
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and endpoints
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_selectors_match_pod_labels_and_services(manifests: list[dict[str, Any]]) -> None:
    deployments = by_kind(manifests, "Deployment")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for dep, labels in zip(deployments, pod_labels, strict=True):
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in by_kind(manifests, kind):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matches = [lab for lab in pod_labels if selector.items() <= lab.items()]
            assert len(matches) == 1, f"{kind} {doc['metadata']['name']} selects {len(matches)} deployments"
    services = by_kind(manifests, "Service")
    for monitor in by_kind(manifests, "ServiceMonitor"):
        want = monitor["spec"]["selector"]["matchLabels"]
        assert any(want.items() <= s["metadata"]["labels"].items() for s in services), monitor["metadata"]["name"]
    for monitor in by_kind(manifests, "PodMonitor"):
        # Pods without a Service (workers) are scraped directly: the selector must find them and their port.
        want = monitor["spec"]["selector"]["matchLabels"]
        templates = [d["spec"]["template"] for d in deployments]
        pods = [t for t in templates if want.items() <= t["metadata"]["labels"].items()]
        assert len(pods) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    for hpa in by_kind(manifests, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in {d["metadata"]["name"] for d in deployments}
        assert hpa["spec"]["minReplicas"] >= 2


def test_probes_resources_security(manifests: list[dict[str, Any]]) -> None:
    for dep in by_kind(manifests, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], dep["metadata"]["name"]
            assert not c["image"].endswith(":latest") and ":" in c["image"]
        name = dep["metadata"]["name"]
        if name.endswith("-gateway"):
            (c,) = pod["containers"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert pod["affinity"]["podAntiAffinity"]
        if name.endswith(("-gateway", "-worker")):
            assert pod["securityContext"]["runAsNonRoot"] is True
            (c,) = pod["containers"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["args"][:1] == (["serve"] if name.endswith("-gateway") else ["worker"])
        if "-vllm-" in name:
            (c,) = pod["containers"]
            assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
            assert c["resources"]["requests"]["nvidia.com/gpu"] >= 1
            assert pod["runtimeClassName"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert c[probe]["httpGet"]["path"] == "/health"
            claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]
            assert claim["claimName"] in {p["metadata"]["name"] for p in by_kind(manifests, "PersistentVolumeClaim")}


def test_no_inline_secrets(manifests: list[dict[str, Any]]) -> None:
    secret_env = {"API_KEYS", "QDRANT_API_KEY", "HF_TOKEN", "THINKER_API_KEY", "EMBEDDER_API_KEY"}
    for dep in by_kind(manifests, "Deployment"):
        for c in containers(dep):
            for env in c.get("env", []):
                if env["name"] in secret_env:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


def test_external_urls_wired(manifests: list[dict[str, Any]]) -> None:
    gateway = next(d for d in by_kind(manifests, "Deployment") if d["metadata"]["name"].endswith("-gateway"))
    env = {e["name"]: e.get("value") for e in containers(gateway)[0]["env"]}
    assert env["QDRANT_URL"].startswith("http") and "qdrant" in env["QDRANT_URL"]
    assert env["REDIS_URL"].startswith("redis://")
    assert env["THINKER_URL"].endswith("-vllm-think:8000/v1")


def test_production_values() -> None:
    docs = render(VALUE_SETS["production"])
    assert not by_kind(docs, "Secret")  # keys come from the existing Secret
    ingress = by_kind(docs, "Ingress")
    assert ingress and ingress[0]["spec"]["tls"][0]["secretName"] == "search-example-tls"
    names = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    assert {"ts-thinksearch-vllm-think", "ts-thinksearch-vllm-embed", "ts-thinksearch-worker"} <= names
    gateway = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-gateway"))
    env = {e["name"]: e for e in containers(gateway)[0]["env"]}
    assert env["EMBEDDER_URL"]["value"].endswith("-vllm-embed:8000/v1")
    assert env["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "qdrant-api-key"


def test_dashboards_are_the_deploy_files(manifests: list[dict[str, Any]]) -> None:
    # The chart reaches deploy/grafana/dashboards through a symlink (Helm reads nothing outside the chart).
    link = CHART / "dashboards"
    assert link.is_symlink() and link.resolve() == DASHBOARDS.resolve()
    maps = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    rendered = {k: v for m in maps for k, v in m["data"].items()}
    files = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert set(rendered) == set(files) and len(files) >= 4
    for name, text in files.items():
        assert json.loads(rendered[name]) == json.loads(text)
