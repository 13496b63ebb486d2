"""The access log: one JSON line per request with the documented fields; never a token or a query string."""

from __future__ import annotations

import io
import json

import aiohttp

from gateway.server import GatewayProcess
from tests.proxy.conftest import url
from tests.proxy.harness import Issuer

FIELDS = {"ts", "listener", "request_id", "method", "path", "route", "status", "duration_ms", "upstream_ms",
          "issuer", "sub", "decision", "reason"}


async def test_one_line_per_request_without_secrets(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    stream = io.StringIO()
    gateway.access_log._stream = stream
    token = issuer.token(sub='alice "the admin"')
    async with http.get(url(gateway, "/api/x?access_token=zzz&q=1"), headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 400  # token in two places
    async with http.get(url(gateway, "/api/x?q=secret-query"), headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": "Bearer a.b.c"}) as r:
        assert r.status == 401
    gateway.access_log.flush()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 3
    assert all(set(line) == FIELDS for line in lines)
    assert [line["status"] for line in lines] == [400, 200, 401]
    assert {line["listener"] for line in lines} == {"proxy"}
    assert [line["decision"] for line in lines] == ["invalid_request", "allow", "invalid_token"]
    assert [line["reason"] for line in lines] == ["multiple_tokens", None, "malformed"]
    assert lines[1]["sub"] == 'alice "the admin"' and lines[1]["issuer"] == "corp" and lines[1]["upstream_ms"] > 0
    assert lines[1]["path"] == "/api/x"
    for secret in (token, token.split(".")[1], "secret-query", "zzz", "a.b.c"):
        assert secret not in text
