"""/metrics after real traffic: every SPEC metric with its labels, parsed by prometheus_client; the shape pinned by a golden file."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import GatewayProcess
from tests.proxy.conftest import GatewayFactory, admin_url, url
from tests.proxy.dpop_client import DpopClient
from tests.proxy.harness import Issuer
from tests.proxy.test_dpop import dpop_config

GOLDEN = Path(__file__).parent / "metrics.golden"


async def _traffic(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    token = issuer.token()
    for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {token}"}, {}):
        async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
            await resp.read()
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": "Bearer a.b.c"}) as resp:
        await resp.read()
    client = DpopClient()  # one DPoP-bound request, so the DPoP counter is in the exposition
    bound = issuer.token(cnf={"jkt": client.jkt})
    headers = {"Authorization": f"DPoP {bound}", "DPoP": client.proof("GET", url(gateway, "/optional/x"), bound)}
    async with http.get(url(gateway, "/optional/x"), headers=headers) as resp:
        assert resp.status == 200


def shape(text: str) -> str:
    """Metric families with type and label names: what dashboards depend on, without the values."""
    lines = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(sorted(k for k in sample.labels if k != "le"))
            lines.add(f"{sample.name} {family.type} {{{labels}}}")
    return "\n".join(sorted(lines)) + "\n"


async def test_metrics_scrape_after_traffic(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(dpop_config())
    await _traffic(gateway, http, issuer)
    async with http.get(admin_url(gateway, "/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "gateway_jwt_verify_seconds": ("histogram", {"issuer", "result"}),
        "gateway_jwt_cache_lookups": ("counter", {"result"}),
        "gateway_requests": ("counter", {"listener", "route", "code"}),
        "gateway_request_duration_seconds": ("histogram", {"listener", "route"}),
        "gateway_upstream_duration_seconds": ("histogram", {"route"}),
        "gateway_jwks_refresh": ("counter", {"issuer", "result"}),
        "gateway_jwks_keys": ("gauge", {"issuer"}),
        "gateway_config_reloads": ("counter", {"result"}),
        "gateway_inflight_requests": ("gauge", set()),
        "gateway_build_info": ("gauge", {"version"}),
        "gateway_dpop_checks": ("counter", {"issuer", "result"}),
    }
    for name, (kind, labels) in expected.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        sample_labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert sample_labels == labels, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("gateway_requests_total", (("code", "200"), ("listener", "proxy"), ("route", "api")))] == 2
    assert samples[("gateway_requests_total", (("code", "401"), ("listener", "proxy"), ("route", "api")))] == 2
    assert samples[("gateway_jwt_cache_lookups_total", (("result", "hit"),))] == 1
    assert samples[("gateway_jwt_verify_seconds_count", (("issuer", "corp"), ("result", "ok")))] == 3
    assert samples[("gateway_dpop_checks_total", (("issuer", "corp"), ("result", "ok")))] == 1
    assert samples[("gateway_jwt_verify_seconds_count", (("issuer", "unknown"), ("result", "malformed")))] == 1
    assert samples[("gateway_jwks_keys", (("issuer", "corp"),))] == 2
    assert samples[("gateway_jwks_refresh_total", (("issuer", "corp"), ("result", "ok")))] >= 1
    # Verification buckets resolve from 10µs.
    buckets = [s.labels["le"] for s in families["gateway_jwt_verify_seconds"].samples if "le" in s.labels]
    assert "1e-05" in buckets and "1.0" in buckets
    assert shape(text) == GOLDEN.read_text(), "metric names, types or labels changed: update metrics.golden on purpose"


async def test_admin_endpoints_not_reachable_through_proxy(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        async with http.get(url(gateway, path)) as resp:
            assert resp.status == 404  # no route matches: the proxy never serves admin paths
    async with http.get(admin_url(gateway, "/healthz")) as resp:
        assert resp.status == 200
