"""server.send_timeout and server.body_timeout over real sockets: a client that stops reading its answer or
stops sending its body is cut (and counted); one that reads or uploads slowly but steadily is not."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import cast

from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from gateway.edge import Edge, Limits
from gateway.metrics import Metrics
from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory
from tests.proxy.h2client import H2Client
from tests.proxy.harness import Issuer, Upstream, wait_for

SEND_TIMEOUT = 0.4
BODY_TIMEOUT = 0.4


def _config(send_timeout: float = SEND_TIMEOUT, body_timeout: float = BODY_TIMEOUT) -> str:
    keys = f"  send_timeout: {int(send_timeout * 1000)}ms\n  body_timeout: {int(body_timeout * 1000)}ms\n"
    return BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n" + keys)


def _metric(gateway: GatewayProcess, name: str) -> float:
    for line in gateway.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _rejected(gateway: GatewayProcess, reason: str) -> float:
    return _metric(gateway, f'gateway_connections_rejected_total{{reason="{reason}"}}')


def _requests(gateway: GatewayProcess, code: int) -> float:
    return _metric(gateway, f'gateway_requests_total{{code="{code}",listener="proxy",route="upstream-misc"}}')


async def _cut_once(gateway: GatewayProcess, upstream: Upstream, reason: str) -> None:
    """Counted once, the upstream exchange dropped, the request's admission given back."""
    await wait_for(lambda: _rejected(gateway, reason) == 1, timeout=10)
    await asyncio.wait_for(upstream.cut.wait(), 5)
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)
    assert _rejected(gateway, reason) == 1


async def _small_window_socket(port: int) -> socket.socket:
    """A client whose kernel holds little: what it has not read soon stops the sender."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: the window scale follows
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _served(gateway: GatewayProcess) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(data.split(b" ", 2)[1])


async def test_a_client_that_never_reads_its_answer_is_cut_after_send_timeout(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway = await make_gateway(_config(), upstream_timeout="10s")
    sock = await _small_window_socket(gateway.proxy_port)
    request = f"GET /download/{256 << 20} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n"
    await asyncio.get_running_loop().sock_sendall(sock, request.encode())
    await asyncio.wait_for(upstream.streaming.wait(), 5)
    started = time.monotonic()
    assert await _served(gateway) == 200  # everyone else is served meanwhile
    await _cut_once(gateway, upstream, "send_timeout")
    assert time.monotonic() - started >= SEND_TIMEOUT
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 0)
    assert _requests(gateway, 499) == 1  # recorded as a client that went away
    sock.close()


async def test_a_websocket_client_that_stops_reading_is_cut_after_send_timeout(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    """A tunnel is an answer too: the service pushes megabytes, the client takes none after the 101."""
    gateway = await make_gateway(_config(), upstream_timeout="10s")
    sock = await _small_window_socket(gateway.proxy_port)
    request = (
        f"GET /ws?flood=256 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request.encode())
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)
    assert head.startswith(b"HTTP/1.1 101 ")  # and nothing more is read
    await asyncio.wait_for(upstream.streaming.wait(), 5)
    assert await _served(gateway) == 200  # everyone else is served meanwhile
    await wait_for(lambda: _rejected(gateway, "send_timeout") == 1, timeout=10)
    await asyncio.wait_for(upstream.cut.wait(), 10)  # the service's side of the tunnel is closed too
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 0)
    sock.close()


async def test_a_slow_but_steady_reader_is_not_cut(make_gateway: GatewayFactory, issuer: Issuer) -> None:
    """Loopback lets the kernel hold megabytes, so the answer is larger than that: the gateway is soon
    waiting on the client, which reads 8 KiB every 100 ms for many send_timeouts (each wait for the
    socket to drain takes longer than send_timeout: only progress keeps it), then the rest at once."""
    gateway = await make_gateway(_config(send_timeout=0.5))
    loop = asyncio.get_running_loop()
    sock = await _small_window_socket(gateway.proxy_port)
    size = 16 << 20
    request = f"GET /download/{size} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    received = bytearray()

    async def receive(n: int) -> None:
        piece = await asyncio.wait_for(loop.sock_recv(sock, n), 5)
        assert piece, f"cut after {len(received)} bytes"
        received.extend(piece)

    for _ in range(20):  # 2 s: four send_timeouts, straight from the socket (no client-side buffer)
        await asyncio.sleep(0.1)
        await receive(8192)
    head = bytes(received).partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    while len(received) < len(head) + 4 + size:
        await receive(1 << 20)
    sock.close()
    assert bytes(received[len(head) + 4:]) == b"x" * size
    assert _rejected(gateway, "send_timeout") == 0


async def test_a_stalled_request_body_gets_408_after_body_timeout(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway = await make_gateway(_config(), upstream_timeout="10s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b"0123456789"  # and never the rest
    )
    started = time.monotonic()
    assert await _served(gateway) == 200
    data = await asyncio.wait_for(reader.read(), 5)  # the answer, then the connection closes
    writer.close()
    assert time.monotonic() - started >= BODY_TIMEOUT
    assert data.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in data and b"request body did not arrive" in data
    assert _rejected(gateway, "body_timeout") == 1
    assert _requests(gateway, 408) == 1
    assert not upstream.streaming.is_set()  # a small body is read whole before the upstream is asked
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)


async def test_a_body_stalled_after_the_answer_began_is_cut(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    """The service answered before the body was in; then the client stops sending: no 408 can follow
    an answer under way, so the connection is cut (logged 499, reason body_timeout), the upstream dropped."""
    gateway = await make_gateway(_config(), upstream_timeout="10s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        f"POST /answer-first HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n"
        f"Content-Length: {1 << 20}\r\n\r\n".encode()
        + b"b" * (256 << 10)  # a quarter of it, and never the rest
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"started" in await asyncio.wait_for(reader.readuntil(b"started\n"), 5)
    try:
        rest = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        rest = b""  # cut with a reset: the same verdict
    writer.close()
    assert b"received" not in rest  # the answer never completed
    await _cut_once(gateway, upstream, "body_timeout")
    assert _requests(gateway, 499) == 1


async def test_a_stalled_chunked_body_gets_408_and_the_upstream_exchange_is_dropped(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway = await make_gateway(_config(), upstream_timeout="10s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
        + b"a\r\n0123456789\r\n"  # and never the rest
    )
    await asyncio.wait_for(upstream.streaming.wait(), 5)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in data
    await _cut_once(gateway, upstream, "body_timeout")


async def test_a_slow_but_steady_upload_is_not_cut(make_gateway: GatewayFactory, issuer: Issuer) -> None:
    gateway = await make_gateway(_config(body_timeout=0.5), upstream_timeout="10s")  # the upload outlasts 1 s
    pieces, piece = 20, b"z" * 100
    for framing in (f"Content-Length: {pieces * len(piece)}", "Transfer-Encoding: chunked"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
        writer.write(
            f"POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {issuer.token()}\r\n{framing}\r\n\r\n".encode()
        )
        for _ in range(pieces):  # 2 s in all (four body_timeouts), a piece every 100 ms
            await asyncio.sleep(0.1)
            writer.write(piece if framing.startswith("Content") else b"64\r\n" + piece + b"\r\n")
        if framing.startswith("Transfer"):
            writer.write(b"0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        body = await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 ") and body == b'{"received": 2000}', (framing, head, body)
    assert _rejected(gateway, "body_timeout") == 0


# -- HTTP/2 ----------------------------------------------------------------------------------


async def _h2_gateway(
    make_gateway: GatewayFactory, issuer: Issuer, **timeouts: float
) -> tuple[GatewayProcess, H2Client, list[tuple[str, str]]]:
    """A gateway with server.http2, one client connection to it, and a token's header."""
    text = _config(**timeouts).replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  http2: true\n")
    gateway = await make_gateway(text, upstream_timeout="10s")
    client = await H2Client.connect(gateway.proxy_port)
    return gateway, client, [("authorization", f"Bearer {issuer.token()}")]


async def test_h2_a_stream_whose_window_stays_shut_is_reset_and_the_others_go_on(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer)
    stalled = client.start("GET", f"/download/{64 << 20}", auth, port=gateway.proxy_port)
    client.held.add(stalled)
    await asyncio.wait_for(upstream.streaming.wait(), 5)
    other = await client.request("GET", "/public/meanwhile", port=gateway.proxy_port)
    assert other.status == 200  # the same connection serves other streams meanwhile
    answer = await asyncio.wait_for(client.done[stalled], 10)
    assert answer.status == 200 and answer.reset == ErrorCodes.CANCEL
    await _cut_once(gateway, upstream, "send_timeout")
    assert _requests(gateway, 499) == 1
    after = await client.request("GET", "/public/after", port=gateway.proxy_port)
    assert after.status == 200 and client.goaway is None
    await client.close()


async def test_h2_a_connection_whose_window_stays_shut_gets_goaway(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer)
    client.hold_connection = True
    stalled = client.start("GET", f"/download/{64 << 20}", auth)
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.CANCEL
    assert client.responses[stalled].status == 200
    await _cut_once(gateway, upstream, "send_timeout")
    await client.close()


async def test_h2_a_stream_whose_window_opens_slowly_but_steadily_is_not_cut(
    make_gateway: GatewayFactory, issuer: Issuer
) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer, send_timeout=0.5)
    size = 1 << 20
    stream_id = client.start("GET", f"/download/{size}", auth)
    client.held.add(stream_id)
    await wait_for(lambda: len(client.responses[stream_id].body) == 65535)  # the stream's first window
    for _ in range(20):  # 2 s: four send_timeouts, 8 KiB of window every 100 ms
        await asyncio.sleep(0.1)
        client.h2.increment_flow_control_window(8192, stream_id=stream_id)
        client.flush()
    assert client.responses[stream_id].reset is None
    client.held.discard(stream_id)
    client.h2.increment_flow_control_window(size, stream_id=stream_id)  # then the rest at once
    client.flush()
    answer = await asyncio.wait_for(client.done[stream_id], 10)
    assert answer.status == 200 and answer.reset is None and answer.body == b"x" * size
    assert _rejected(gateway, "send_timeout") == 0
    await client.close()


async def test_h2_a_stalled_stream_the_client_resets_leaves_no_deadline_behind(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer)
    client.hold_connection = True
    stalled = client.start("GET", f"/download/{64 << 20}", auth)
    await wait_for(lambda: len(client.responses[stalled].body) == 65535)  # the connection's window is spent
    client.h2.reset_stream(stalled)
    client.h2.increment_flow_control_window(65535)  # and given back: a client that moved on
    client.hold_connection = False
    client.flush()
    await asyncio.sleep(2 * SEND_TIMEOUT)
    later = await client.request("GET", "/slow?delay=0.5", auth, port=gateway.proxy_port)
    assert later.status == 200 and client.goaway is None
    assert _rejected(gateway, "send_timeout") == 0
    await client.close()


async def test_h2_a_client_that_reads_nothing_off_the_socket_is_cut(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    """Windows wide open, socket never read: the gateway's writes wait on the socket, not on a window."""
    gateway, client, auth = await _h2_gateway(make_gateway, issuer)
    widest = 2**31 - 1
    client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: widest})
    client.h2.increment_flow_control_window(widest - 65535)
    client.start("GET", f"/download/{256 << 20}", auth)
    assert client._task is not None
    client._task.cancel()  # from here on nothing is read
    await _cut_once(gateway, upstream, "send_timeout")
    await wait_for(lambda: _metric(gateway, "gateway_open_connections") == 0)
    assert _requests(gateway, 499) == 1
    await client.close()


async def test_h2_a_stalled_request_body_gets_408_and_the_others_go_on(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream
) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer)
    stalled = client.start("POST", "/upload", [*auth, ("content-length", "100000")], end=False, port=gateway.proxy_port)
    client.h2.send_data(stalled, b"0123456789")  # and never the rest
    client.flush()
    await asyncio.wait_for(upstream.streaming.wait(), 5)
    other = await client.request("POST", "/upload", auth, body=b"y" * 5000, port=gateway.proxy_port)
    assert other.status == 200 and other.body == b'{"received": 5000}'
    answer = await asyncio.wait_for(client.done[stalled], 10)
    assert answer.status == 408 and b"request body did not arrive" in answer.body
    await _cut_once(gateway, upstream, "body_timeout")
    assert _requests(gateway, 408) == 1
    after = await client.request("GET", "/public/after", port=gateway.proxy_port)
    assert after.status == 200 and client.goaway is None
    await client.close()


async def test_h2_a_slow_but_steady_upload_is_not_cut(make_gateway: GatewayFactory, issuer: Issuer) -> None:
    gateway, client, auth = await _h2_gateway(make_gateway, issuer, body_timeout=0.5)
    stream_id = client.start("POST", "/upload", auth, end=False, port=gateway.proxy_port)
    for _ in range(20):  # 2 s in all (four body_timeouts), a piece every 100 ms
        await asyncio.sleep(0.1)
        client.h2.send_data(stream_id, b"z" * 100)
        client.flush()
    client.h2.end_stream(stream_id)
    client.flush()
    answer = await asyncio.wait_for(client.done[stream_id], 10)
    assert answer.status == 200 and answer.body == b'{"received": 2000}'
    assert _rejected(gateway, "body_timeout") == 0
    await client.close()


async def test_a_closed_connection_whose_client_takes_nothing_is_cut_after_send_timeout() -> None:
    """After the last answer the connection is closed with bytes still buffered; a client that never reads
    them would keep the socket (and its file descriptor) open for ever once nothing tracks it."""
    edge = Edge(_never_called, lambda _: None, Limits(send_timeout=SEND_TIMEOUT), Metrics())
    lost = asyncio.Event()

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            answer = cast(asyncio.Transport, transport)
            answer.write(b"x" * (16 * 1024 * 1024))  # far beyond the kernel's buffers
            edge.close(self, answer)  # `self` is not among the edge's connections: nothing to uncount

        def connection_lost(self, exc: BaseException | None) -> None:
            lost.set()

    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # and never reads
    try:
        await asyncio.wait_for(lost.wait(), SEND_TIMEOUT + 5)
    finally:
        writer.close()
        server.close()


async def _never_called(request: object) -> None:
    raise AssertionError("no request reaches the handler here")
