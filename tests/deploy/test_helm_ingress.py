"""The chart's Ingress routes the API and the probes only, unless the values ask for more: /metrics and the docs
(/docs, /redoc, /openapi.json) stay inside the cluster by default."""

from __future__ import annotations

import kubernetes_validate

from tests.deploy.test_helm import EXTERNAL, KUBE_VERSION, _merge, by_kind, render

INGRESS = {"gateway": {"ingress": {"enabled": True, "className": "nginx", "host": "search.example.com"}}}


def ingress_paths(values: dict) -> list[tuple[str, str]]:
    (ingress,) = by_kind(render(_merge(EXTERNAL, values)), "Ingress")
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)
    (rule,) = ingress["spec"]["rules"]
    for path in rule["http"]["paths"]:
        assert path["backend"]["service"]["name"] == "ts-thinksearch-gateway"
    return [(p["path"], p["pathType"]) for p in rule["http"]["paths"]]


def test_by_default_only_the_api_and_the_probes_are_routed():
    paths = ingress_paths(INGRESS)
    assert paths == [("/v1", "Prefix"), ("/healthz", "Prefix"), ("/readyz", "Prefix")]
    assert not any(p in {"/", "/metrics", "/docs", "/openapi.json", "/redoc"} for p, _ in paths)


def test_the_values_can_expose_more():
    more = ["/v1", "/healthz", "/readyz", "/docs", "/openapi.json"]
    exposed = _merge(INGRESS, {"gateway": {"ingress": {"paths": more}}})
    assert [p for p, _ in ingress_paths(exposed)] == more
