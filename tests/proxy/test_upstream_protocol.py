"""The upstream client against a scripted HTTP/1.1 server: framing, interim responses, stale connections, bad answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.proxy.conftest import GatewayFactory, url

Script = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close without answering)


@dataclass
class ScriptedUpstream:
    """A raw TCP server: each request head gets the bytes the test scripted, exactly."""

    script: Script
    port: int = 0
    connections: int = 0
    close_after_answer: bool = False
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                self.requests.append(head)
                answer = self.script(head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], ScriptedUpstream]]:
    servers: list[ScriptedUpstream] = []

    def make(script: Script) -> ScriptedUpstream:
        server = ScriptedUpstream(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.server is not None:
            server.server.close()


def answer(raw: bytes) -> Script:
    return lambda head: raw


async def _get(gateway_factory: GatewayFactory, upstream: ScriptedUpstream, method: str = "GET") -> tuple[int, bytes, aiohttp.ClientResponse]:
    await upstream.start()
    gateway = await gateway_factory(upstream_port=upstream.port)
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url(gateway, "/public/x")) as resp:
            return resp.status, await resp.read(), resp


async def test_chunked_response_is_reframed(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    status, body, _ = await _get(make_gateway, scripted(answer(raw)))
    assert (status, body) == (200, b"hello world")


async def test_close_delimited_body(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    upstream = scripted(answer(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"))
    upstream.close_after_answer = True
    status, body, _ = await _get(make_gateway, upstream)
    assert (status, body) == (200, b"until the end")


async def test_interim_1xx_responses_are_skipped(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    status, body, _ = await _get(make_gateway, scripted(answer(raw)))
    assert (status, body) == (200, b"ok")


async def test_head_keeps_content_length(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    status, body, resp = await _get(make_gateway, scripted(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")), "HEAD")
    assert (status, body) == (200, b"")
    assert resp.headers["Content-Length"] == "1234"


@pytest.mark.parametrize("status_code", [204, 304])
async def test_no_body_statuses(make_gateway: GatewayFactory, scripted, status_code: int) -> None:  # type: ignore[no-untyped-def]
    raw = f"HTTP/1.1 {status_code} X\r\nETag: \"e\"\r\n\r\n".encode()
    status, body, _ = await _get(make_gateway, scripted(answer(raw)))
    assert (status, body) == (status_code, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n",
        None,  # the upstream closes without answering
    ],
    ids=["conflicting-length", "negative-length", "bad-status", "not-http", "obs-fold", "space-in-name",
         "control-in-value", "no-answer"],
)
async def test_invalid_upstream_answer_is_502(make_gateway: GatewayFactory, scripted, raw: bytes | None) -> None:  # type: ignore[no-untyped-def]
    status, body, _ = await _get(make_gateway, scripted(lambda head: raw))
    assert status == 502
    assert b"bad_gateway" in body


async def test_stale_keepalive_connection_is_retried_once(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    # The upstream answers and then closes every connection, as one whose keep-alive timed out.
    upstream = scripted(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    upstream.close_after_answer = True
    await upstream.start()
    gateway = await make_gateway(upstream_port=upstream.port)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url(gateway, "/public/x")) as resp:
                assert resp.status == 200 and await resp.read() == b"ok"
    assert upstream.connections >= 3


async def test_connection_reused_when_kept_alive(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    upstream = scripted(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    await upstream.start()
    gateway = await make_gateway(upstream_port=upstream.port)
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(url(gateway, "/public/x")) as resp:
                assert resp.status == 200
    assert upstream.connections == 1
    assert len(upstream.requests) == 5


async def test_request_head_sent_upstream(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    upstream = scripted(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    await upstream.start()
    gateway = await make_gateway(upstream_port=upstream.port)
    async with aiohttp.ClientSession() as http:
        async with http.post(url(gateway, "/public/x?a=1"), data=b"abc", headers={"Connection": "keep-alive, X-Drop"}) as resp:
            assert resp.status == 200
    head = upstream.requests[0].decode()
    assert head.startswith("POST /public/x?a=1 HTTP/1.1\r\n")
    assert "\r\nContent-Length: 3\r\n" in head
    assert "x-drop" not in head.lower() and "\r\nconnection:" not in head.lower()


async def test_upstream_answering_before_the_body_is_sent(make_gateway: GatewayFactory) -> None:
    """An app may refuse an upload at once (413); the client gets that answer, not a hang or a 502."""

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    try:
        gateway = await make_gateway(upstream_port=server.sockets[0].getsockname()[1])

        async def body() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"x" * 65536

        async with aiohttp.ClientSession() as http:
            async with http.post(
                url(gateway, "/public/x"), data=body(), headers={"Content-Length": str(64 * 65536)}
            ) as resp:
                assert resp.status == 413
                assert await resp.read() == b"big"
    finally:
        server.close()


async def test_unknown_length_answer_to_http10_client_is_close_delimited(make_gateway: GatewayFactory, scripted) -> None:  # type: ignore[no-untyped-def]
    """HTTP/1.0 has no chunked coding (RFC 9112 §7.1): the body ends when the connection does."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    upstream = scripted(answer(raw))
    await upstream.start()
    gateway = await make_gateway(upstream_port=upstream.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"GET /public/x HTTP/1.0\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the gateway closed
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" not in head.lower()
    assert body == b"hello world"
