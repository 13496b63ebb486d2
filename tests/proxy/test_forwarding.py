"""Forwarding: anti-spoofing, path confusion, header rewriting, streaming, 100-continue, WebSocket, client abort."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.server import GatewayProcess
from tests.proxy.conftest import url
from tests.proxy.harness import Issuer, Upstream, raw_request, wait_for
from tests.proxy.test_http_table import seen_headers

SPOOFED = {
    "X-User-Id": "mallory",
    "x-user-email": "mallory@evil.example",
    "X-User-Roles": "admin",
    "X-Jwt-Payload": "eyJzdWIiOiJtYWxsb3J5In0",
    "X_User_Id": "mallory-underscore",
    "X-Forwarded-Host": "evil.example",
}


@pytest.mark.parametrize(
    "path,with_token",
    [("/public/x", False), ("/optional/x", False), ("/optional/x", True), ("/api/x", True)],
    ids=["public", "optional-no-token", "optional-token", "required"],
)
async def test_client_cannot_supply_claim_headers(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, path: str, with_token: bool
) -> None:
    headers = dict(SPOOFED)
    if with_token:
        headers["Authorization"] = f"Bearer {issuer.token(email=None)}"
    async with http.get(url(gateway, path), headers=headers) as resp:
        assert resp.status == 200
        seen = seen_headers(json.loads(await resp.read()))
    assert "x_user_id" not in seen  # an underscore spelling may alias X-User-Id in CGI-style apps
    assert "x-user-email" not in seen  # the token has no email claim: no header at all
    assert "x-user-roles" not in seen
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{gateway.proxy_port}"]
    if with_token:
        assert seen["x-user-id"] == ["alice"]
        assert seen["x-jwt-payload"] != [SPOOFED["X-Jwt-Payload"]]
    else:
        assert "x-user-id" not in seen and "x-jwt-payload" not in seen


async def test_hop_by_hop_and_connection_named_headers_dropped(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    headers = {"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
               "Proxy-Authorization": "Basic eA==", "TE": "trailers", "X-Request-Id": "trace-123",
               "X-Forwarded-For": "10.0.0.1"}
    async with http.get(url(gateway, "/public/x"), headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "trace-123"
        seen = seen_headers(json.loads(await resp.read()))
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "te"):
        assert name not in seen, name
    assert seen["x-request-id"] == ["trace-123"]
    assert seen["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]


async def test_bad_request_id_is_replaced(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(url(gateway, "/public/x"), headers={"X-Request-Id": "bad id with spaces"}) as resp:
        seen = seen_headers(json.loads(await resp.read()))
    assert seen["x-request-id"][0] != "bad id with spaces"


@pytest.mark.parametrize(
    "raw_path,expected_status,upstream_path",
    [
        ("/public/../admin/users", 401, None),
        ("/public/%2e%2e/admin/users", 401, None),
        ("/public/%2E%2E/admin/users", 401, None),
        ("/%61dmin/users", 401, None),
        ("//admin/users", 401, None),
        ("/public/./x", 200, "/public/x"),
        ("/public//x", 200, "/public/x"),
        ("/%70ublic/x", 200, "/public/x"),
        ("/public%2F..%2Fadmin", 400, None),
        ("/public/..%2fadmin", 400, None),
        ("/public/..\\admin", 400, None),
        ("/public/%5c..%5cadmin", 400, None),
        ("/admin;x=1/users", 400, None),
        ("/public/%00", 400, None),
        ("/public/%zz", 400, None),
    ],
)
async def test_path_confusion(
    gateway: GatewayProcess, upstream: Upstream, raw_path: str, expected_status: int, upstream_path: str | None
) -> None:
    head = f"GET {raw_path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    status, _ = await raw_request(gateway.proxy_port, head)
    assert status == expected_status, raw_path
    if upstream_path is not None:
        assert upstream.seen[-1]["path"] == upstream_path


async def test_upstream_gets_the_normalized_path(
    gateway: GatewayProcess, upstream: Upstream, issuer: Issuer
) -> None:
    token = issuer.token(scope="admin")
    head = f"GET /public/%2e%2e/admin/%75sers?q=%2e HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    status, _ = await raw_request(gateway.proxy_port, head.encode())
    assert status == 200
    assert upstream.seen[-1]["path"] == "/admin/users?q=%2e"  # the query passes untouched


async def test_head_request(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.head(url(gateway, "/public/x")) as resp:
        assert resp.status == 200
        assert await resp.read() == b""


async def test_chunked_upload(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"z" * 10000

    headers = {"Authorization": f"Bearer {issuer.token()}"}
    async with http.post(url(gateway, "/upload"), data=body(), headers=headers) as resp:
        assert resp.status == 200
        assert json.loads(await resp.read()) == {"received": 100000}


async def test_expect_continue_only_after_authorization(gateway: GatewayProcess, issuer: Issuer) -> None:
    body = b"hello"
    base = (
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n"
    )
    # Refused: the final status comes at once, and no 100 Continue invites the body.
    status, data = await raw_request(gateway.proxy_port, (base + "\r\n").encode())
    assert status == 401 and b"100 Continue" not in data
    # Authorized: 100 Continue, then the body goes through.
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write((base + f"Authorization: Bearer {issuer.token()}\r\n\r\n").encode())
    await writer.drain()
    interim = await asyncio.wait_for(reader.readline(), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    await reader.readline()
    writer.write(body)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert rest.startswith(b"HTTP/1.1 200") and b'"received": 5' in rest


async def test_websocket_after_checks(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url(gateway, "/ws"))
    assert refused.value.status == 401
    headers = {"Authorization": f"Bearer {issuer.token()}", "X-User-Id": "mallory"}
    async with http.ws_connect(url(gateway, "/ws"), headers=headers) as ws:
        hello: dict[str, Any] = json.loads(await ws.receive_str(timeout=5))
        assert hello == {"x-user-id": "alice"}
        await ws.send_str("ping")
        assert await ws.receive_str(timeout=5) == "echo:ping"


async def test_client_abort_cancels_upstream_exchange(
    gateway: GatewayProcess, upstream: Upstream, issuer: Issuer
) -> None:
    head = f"GET /slow?delay=5 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n"
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(head.encode())
    await writer.drain()
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 1)
    writer.close()
    await wait_for(upstream.cancelled.is_set, timeout=3)  # long before the 5 s answer
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)
    assert 'code="499"' in gateway.metrics.exposition().decode()


async def test_client_leaving_mid_download_is_499_not_an_error(
    gateway: GatewayProcess, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    head = f"GET /download/{200 << 20} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(head.encode())
    await writer.drain()
    await reader.readexactly(1 << 20)  # the download is under way
    writer.transport.abort()
    await wait_for(lambda: 'code="499"' in gateway.metrics.exposition().decode(), timeout=5)
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_more_than_a_hundred_websockets_at_once(gateway: GatewayProcess, issuer: Issuer) -> None:
    # Found by the soak: the upstream WebSocket client had aiohttp's default pool of
    # 100 connections, so the 101st concurrent WebSocket waited for a slot and got 504.
    headers = {"Authorization": f"Bearer {issuer.token()}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http, contextlib.AsyncExitStack() as stack:
        for _ in range(105):
            ws = await stack.enter_async_context(http.ws_connect(url(gateway, "/ws"), headers=headers))
            assert json.loads(await ws.receive_str(timeout=5)) == {"x-user-id": "alice"}
