"""Every row of SPEC's "HTTP behaviour on the proxy port" table, through real sockets."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, url
from tests.proxy.harness import Issuer, Upstream, free_port


def seen_headers(record: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in record["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def _error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(await resp.read())
    assert set(body) == {"error", "error_description", "request_id"}
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return body


async def test_valid_token_is_forwarded_with_claim_headers(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, upstream: Upstream
) -> None:
    token = issuer.token(email="alice@example.com", realm_access={"roles": ["ops", "dev"]})
    async with http.get(url(gateway, "/api/orders?x=1"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        record = json.loads(await resp.read())
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    headers = seen_headers(record)
    assert record["path"] == "/api/orders?x=1"
    assert headers["x-user-id"] == ["alice"]
    assert headers["x-user-email"] == ["alice@example.com"]
    assert headers["x-user-roles"] == ["ops,dev"]
    assert headers["x-jwt-payload"] == [token.split(".")[1]]
    assert headers["authorization"] == [f"Bearer {token}"]  # keep_authorization defaults to true
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"127.0.0.1:{gateway.proxy_port}"]
    assert len(headers["x-request-id"][0]) == 24


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_both_key_types_verify(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, alg: str
) -> None:
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token(alg)}"}) as resp:
        assert resp.status == 200


async def test_required_route_without_token_is_401(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(url(gateway, "/api/orders")) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        assert (await _error(resp))["error"] == "unauthorized"


async def test_non_bearer_authorization_counts_as_no_token(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(url(gateway, "/api/orders"), headers={"Authorization": "Basic dXNlcjpwYXNz"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


@pytest.mark.parametrize(
    "where",
    [
        {"headers": "Authorization", "cookie": True},
        {"headers": "Authorization", "query": True},
        {"cookie": True, "query": True},
    ],
)
async def test_tokens_in_more_than_one_place_is_400(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, where: dict[str, Any]
) -> None:
    token = issuer.token()
    headers = {}
    path = "/api/orders"
    if "headers" in where:
        headers["Authorization"] = f"Bearer {token}"
    if where.get("cookie"):
        headers["Cookie"] = f"access_token={token}"
    if where.get("query"):
        path += f"?access_token={token}"
    async with http.get(url(gateway, path), headers=headers) as resp:
        assert resp.status == 400
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="gateway", error="invalid_request"')
        assert (await _error(resp))["error"] == "invalid_request"


async def test_two_authorization_headers_is_400(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    token = issuer.token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    async with http.get(url(gateway, "/api/orders"), headers=headers) as resp:
        assert resp.status == 400


async def test_token_in_cookie_or_query_is_accepted(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    token = issuer.token()
    async with http.get(url(gateway, "/api/a"), headers={"Cookie": f"theme=dark; access_token={token}"}) as resp:
        assert resp.status == 200
    async with http.get(url(gateway, f"/api/a?access_token={token}")) as resp:
        assert resp.status == 200


def _invalid_tokens(issuer: Issuer) -> dict[str, tuple[str, str]]:
    good = issuer.token()
    head, payload, sig = good.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    now = int(time.time())
    return {
        "bad_signature": (f"{head}.{payload}.{flipped}", "bad_signature"),
        "wrong_alg": (issuer.token("PS256"), "alg_not_allowed"),
        "wrong_issuer": (issuer.token(iss="https://evil.example/"), "bad_issuer"),
        "wrong_audience": (issuer.token(aud="other-api"), "bad_audience"),
        "expired": (issuer.token(exp=now - 3600, iat=now - 7200), "expired"),
        "not_yet_valid": (issuer.token(nbf=now + 3600), "not_yet_valid"),
        "malformed": ("not.a.token", "malformed"),
        "two_segments": (f"{head}.{payload}", "malformed"),
        "unknown_key": (issuer.token(kid="nobody"), "unknown_key"),
        "too_large": (issuer.token(pad="x" * 5000), "too_large"),
    }


@pytest.mark.parametrize(
    "case",
    ["bad_signature", "wrong_alg", "wrong_issuer", "wrong_audience", "expired", "not_yet_valid",
     "malformed", "two_segments", "unknown_key", "too_large"],
)
async def test_invalid_token_is_401_with_reason(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, case: str
) -> None:
    token, reason = _invalid_tokens(issuer)[case]
    async with http.get(url(gateway, "/api/orders"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401, case
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="gateway", error="invalid_token", error_description="')
        body = await _error(resp)
        assert body["error"] == "invalid_token"
        assert body["error_description"] in challenge
    metrics = gateway.metrics.exposition().decode()
    assert f'result="{reason}"' in metrics


async def test_claim_rule_failure_is_403(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    reader = issuer.token(scope="read write")
    async with http.get(url(gateway, "/admin/users"), headers={"Authorization": f"Bearer {reader}"}) as resp:
        assert resp.status == 403
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="gateway", error="insufficient_scope"')
        assert (await _error(resp))["error"] == "insufficient_scope"
    admin = issuer.token(scope="read admin")
    async with http.get(url(gateway, "/admin/users"), headers={"Authorization": f"Bearer {admin}"}) as resp:
        assert resp.status == 200


async def test_optional_route(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    async with http.get(url(gateway, "/optional/x")) as resp:
        assert resp.status == 200
        headers = seen_headers(json.loads(await resp.read()))
        assert "x-user-id" not in headers
    async with http.get(url(gateway, "/optional/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 200
        assert seen_headers(json.loads(await resp.read()))["x-user-id"] == ["alice"]
    async with http.get(url(gateway, "/optional/x"), headers={"Authorization": "Bearer a.b.c"}) as resp:
        assert resp.status == 401


async def test_public_route_checks_no_token(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(url(gateway, "/public/x"), headers={"Authorization": "Bearer garbage"}) as resp:
        assert resp.status == 200


async def test_keys_unavailable_is_503_then_recovers(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    # Point the issuer's jwks at a port nobody listens on, so no key set can be had.
    dead_port = free_port()
    text = BASE_CONFIG.replace('uri: "{issuer_url}jwks.json"', f'uri: "http://127.0.0.1:{dead_port}/jwks.json"')
    gateway = await make_gateway(text, wait_keys=False)
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"].isdigit()
        assert (await _error(resp))["error"] == "temporarily_unavailable"


async def test_cors_preflight_bypasses_token_check(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with http.options(url(gateway, "/api/orders"), headers=headers) as resp:
        assert resp.status == 200
    async with http.options(url(gateway, "/api/orders")) as resp:  # not a preflight: needs a token
        assert resp.status == 401


async def test_cors_preflight_check_mode(make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  cors_preflight: check\n"))
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with http.options(url(gateway, "/api/orders"), headers=headers) as resp:
        assert resp.status == 401


async def test_no_route_is_404(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(url(gateway, "/elsewhere")) as resp:
        assert resp.status == 404
        assert (await _error(resp))["error"] == "not_found"


async def test_upstream_refusing_is_502(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(upstream_port=free_port())  # nobody listens there
    async with http.get(url(gateway, "/public/x")) as resp:
        assert resp.status == 502
        assert (await _error(resp))["error"] == "bad_gateway"


async def test_upstream_without_headers_in_time_is_504(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    started = time.monotonic()
    async with http.get(url(gateway, "/slow?delay=5"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 504
        assert (await _error(resp))["error"] == "gateway_timeout"
    assert time.monotonic() - started < 4  # upstream.timeout is 1s in this config


async def test_long_header_line_is_431(gateway: GatewayProcess) -> None:
    # max_header_bytes defaults to 16384: send one header line longer than that.
    reader, writer = await __import__("asyncio").open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split(b" ")[1] == b"431", status_line


@pytest.mark.parametrize(("typ", "status"), [("at+jwt", 200), ("application/at+JWT", 200), ("JWT", 200), ("id+jwt", 401)])
async def test_typ_allow_list(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, typ: str, status: int
) -> None:
    """Identity providers issue access tokens as `at+jwt` (RFC 9068); other types are refused (RFC 8725 §3.11)."""
    token = issuer.token(headers={"typ": typ})
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == status
        if status == 401:
            assert (await _error(resp))["error_description"] == "the token's type is not allowed"


async def test_claim_rules_hold_for_a_cached_token(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    token = issuer.token(scope="read")
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
        assert resp.status == 200  # verified and cached
    async with http.get(url(gateway, "/admin/x"), headers=headers) as resp:
        assert resp.status == 403  # the cached verdict does not skip the route's rules
    assert 'gateway_jwt_cache_lookups_total{result="hit"} 1.0' in gateway.metrics.exposition().decode()


async def test_keep_authorization_false_strips_it(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(BASE_CONFIG.replace("  payload_header: X-Jwt-Payload\n", "  payload_header: X-Jwt-Payload\n  keep_authorization: false\n"))
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 200
        seen = seen_headers(json.loads(await resp.read()))
    assert "authorization" not in seen
    assert seen["x-user-id"] == ["alice"]
