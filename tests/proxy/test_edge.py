"""The proxy port's own HTTP/1.1 edge over real sockets: pipelining, keep-alive, HEAD, framing, and the
connection limits (header_timeout, idle_timeout, max_connections, max_inflight) with their metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory
from tests.proxy.harness import Issuer, Upstream, wait_for


def _with_server_keys(extra: str) -> str:
    return BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n" + extra)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status, headers, body


def _metric(gateway: GatewayProcess, name: str) -> float:
    for line in gateway.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


async def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        b"GET /public/first HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /public/third HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    await writer.drain()
    answers = [await _read_response(reader) for _ in range(3)]
    writer.close()
    assert [status for status, _, _ in answers] == [200, 404, 200]
    assert b'"/public/first"' in answers[0][2] and b'"/public/third"' in answers[2][2]
    assert [seen["path"] for seen in upstream.seen] == ["/public/first", "/public/third"]


async def test_keep_alive_and_close(gateway: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    for _ in range(2):  # HTTP/1.1: the connection stays for the next request
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = await _read_response(reader)
        assert status == 404 and "connection" not in headers
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, _ = await _read_response(reader)
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the answer
    writer.close()
    # HTTP/1.0 without keep-alive: answered, then closed.
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.0\r\n\r\n")
    status, headers, body = await _read_response(reader)
    assert status == 200 and headers["connection"] == "close" and b'"/public/x"' in body
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_local_reply_to_head_has_length_but_no_body(gateway: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"HEAD /api/x HTTP/1.1\r\nHost: t\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 401 ") and b"\r\nContent-Length: " in head and b"\r\nDate: " in head
    status, _, body = await _read_response(reader)  # the next answer follows at once: no body in between
    writer.close()
    assert status == 404 and b"not_found" in body


async def test_unread_request_body_closes_the_connection(gateway: GatewayProcess) -> None:
    """A refused upload whose body never arrived whole: the rest can never be read as a next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nGET /public/smuggled HTTP/1.1\r\n")
    status, _, _ = await _read_response(reader)
    assert status == 401
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_chunked_request_body_is_streamed(gateway: GatewayProcess, issuer: Issuer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    for _ in range(3):
        writer.write(b"4000\r\n" + b"q" * 0x4000 + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    status, _, body = await _read_response(reader)
    writer.close()
    assert status == 200 and body == b'{"received": 49152}'


async def test_slow_request_head_gets_408_and_close(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(_with_server_keys("  header_timeout: 200ms\n"))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # and never the rest
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in data and b"request_timeout" in data
    assert _metric(gateway, 'gateway_connections_rejected_total{reason="header_timeout"}') == 1
    assert 'gateway_requests_total{code="408",listener="proxy",route="no_route"} 1.0' in gateway.metrics.exposition().decode()


async def test_idle_connection_is_closed(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(_with_server_keys("  idle_timeout: 200ms\n"))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, _ = await _read_response(reader)
    assert status == 404
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 1)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # nothing sent after the answer: closed, silently
    writer.close()
    assert _metric(gateway, 'gateway_connections_rejected_total{reason="idle_timeout"}') == 1
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 0)


async def test_connections_beyond_max_connections_are_closed_at_once(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(_with_server_keys("  max_connections: 2\n"))
    kept = [await asyncio.open_connection("127.0.0.1", gateway.proxy_port) for _ in range(2)]
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        pass  # closed with a reset: refused all the same
    writer.close()
    assert _metric(gateway, 'gateway_connections_rejected_total{reason="max_connections"}') == 1
    # The admitted ones still work.
    r, w = kept[0]
    w.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await _read_response(r))[0] == 404
    for _, w in kept:
        w.close()


async def test_requests_beyond_max_inflight_get_503_at_once(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway = await make_gateway(_with_server_keys("  max_inflight: 1\n"))
    _, slow_writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    slow_writer.write(f"GET /slow?delay=5 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n".encode())
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await _read_response(reader)
    assert status == 503 and headers["retry-after"] == "1" and b'"overloaded"' in body
    assert _metric(gateway, "gateway_requests_shed_total") == 1
    slow_writer.close()
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: t\r\n\r\n")  # capacity is back: served
    assert (await _read_response(reader))[0] == 200
    writer.close()


async def test_limits_follow_a_reload(make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream) -> None:
    """A reload applies new limits: a connection opened before it is closed at the new idle_timeout, and
    the new max_inflight sheds at once."""
    gateway = await make_gateway(_with_server_keys("  idle_timeout: 60s\n"))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await _read_response(reader))[0] == 404
    assert gateway.config_path is not None
    path = Path(gateway.config_path)
    path.write_text(path.read_text().replace("  idle_timeout: 60s\n", "  idle_timeout: 300ms\n  max_inflight: 1\n"))
    assert await gateway.reload()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the old connection meets the new deadline
    writer.close()
    assert _metric(gateway, 'gateway_connections_rejected_total{reason="idle_timeout"}') == 1
    _, slow_writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    slow_writer.write(f"GET /slow?delay=5 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n".encode())
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await _read_response(reader))[0] == 503
    slow_writer.close()
    writer.close()


async def test_repeated_host_is_400_and_never_forwarded(gateway: GatewayProcess, upstream: Upstream) -> None:
    """Two Host headers: which one routes is ambiguous (RFC 9112 §3.2), so neither does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in data
    assert upstream.seen == []
