"""Ambiguous HTTP framing is refused before it can reach the upstream (request smuggling, header tricks)."""

from __future__ import annotations

import pytest

from gateway.server import GatewayProcess
from tests.proxy.harness import Upstream, raw_request

CASES = {
    "content-length-and-transfer-encoding": (
        b"POST /public/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\n"
    ),
    "two-content-lengths": b"POST /public/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "unknown-transfer-coding": b"POST /public/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "obsolete-line-folding": b"GET /public/a HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n",
    "space-before-colon": b"GET /public/a HTTP/1.1\r\nHost: t\r\nX-User-Id : evil\r\n\r\n",
    "nul-in-header-value": b"GET /public/a HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "signed-content-length": b"POST /public/a HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
    "absolute-form-target": b"GET http://evil.example/admin HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_ambiguous_request_is_400_and_never_forwarded(
    gateway: GatewayProcess, upstream: Upstream, name: str
) -> None:
    status, data = await raw_request(gateway.proxy_port, CASES[name])
    assert status == 400, name
    assert b'"error": ' in data  # our JSON reply, not a stack trace
    assert upstream.seen == []


async def test_unparseable_requests_are_counted_and_logged(gateway: GatewayProcess) -> None:
    await raw_request(gateway.proxy_port, CASES["two-content-lengths"])
    assert 'gateway_requests_total{code="400",listener="proxy",route="no_route"} 1.0' in gateway.metrics.exposition().decode()
