"""gRPC through the gateway: a real grpcio service behind it (upstream.protocol: h2c) and a real grpcio client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory
from tests.proxy.h2client import H2Client
from tests.proxy.harness import Issuer

MB = 1024 * 1024
GRPC_CONFIG = (
    BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  http2: true\n")
    .replace('  url: "http://127.0.0.1:{upstream_port}"\n', '  url: "http://127.0.0.1:{grpc_port}"\n  protocol: h2c\n')
    .replace("routes:\n", """routes:
  - name: grpc-admin
    match: {{prefix: /test.Admin/}}
    auth: required
    claims:
      scope: {{contains: admin}}
  - name: grpc
    match: {{prefix: /test.Echo/}}
    auth: required
""")
)


@dataclass
class EchoService:
    """test.Echo: the four call kinds on raw bytes, what metadata arrived, and a slow call."""

    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def server_stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        count, size = json.loads(request)
        for i in range(count):
            yield bytes([i % 256]) * size

    async def client_stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        total = count = 0
        async for message in requests:
            total += len(message)
            count += 1
        return json.dumps([count, total]).encode()

    async def bidi(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for message in requests:
            yield b"echo:" + message

    async def metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return json.dumps([[k, v] for k, v in context.invocation_metadata() or ()]).encode()

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await asyncio.sleep(float(request))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"late"

    def handler(self, service: str) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(service, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Metadata": grpc.unary_unary_rpc_method_handler(self.metadata),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
        })


GRPC_OPTIONS = [("grpc.max_receive_message_length", 16 * MB), ("grpc.max_send_message_length", 16 * MB)]


@pytest.fixture
async def service() -> AsyncIterator[tuple[EchoService, int]]:
    echo = EchoService()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers([echo.handler("test.Echo"), echo.handler("test.Admin")])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield echo, port
    await server.stop(None)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, service: tuple[EchoService, int]) -> GatewayProcess:
    return await make_gateway(GRPC_CONFIG, grpc_port=service[1])


@pytest.fixture
async def channel(gateway: GatewayProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.proxy_port}", options=GRPC_OPTIONS) as ch:
        yield ch


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_unary_call_with_a_valid_token(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    call = channel.unary_unary("/test.Echo/Unary")
    assert await call(b"hello", metadata=_auth(issuer.token())) == b"hello"


async def test_server_streaming(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    call = channel.unary_stream("/test.Echo/ServerStream")
    replies = [m async for m in call(json.dumps([20, 1000]).encode(), metadata=_auth(issuer.token()))]
    assert [r[:1] for r in replies] == [bytes([i]) for i in range(20)]


async def test_client_streaming(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    async def messages() -> AsyncIterator[bytes]:
        for i in range(30):
            yield b"m" * (i + 1)

    call = channel.stream_unary("/test.Echo/ClientStream")
    assert json.loads(await call(messages(), metadata=_auth(issuer.token()))) == [30, sum(range(1, 31))]


async def test_bidi_streaming_interleaves(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    call = channel.stream_stream("/test.Echo/Bidi")(metadata=_auth(issuer.token()))
    for i in range(10):  # each answer arrives before the next message is sent: truly both ways at once
        await call.write(f"n{i}".encode())
        assert await call.read() == f"echo:n{i}".encode()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_a_silent_streaming_client_is_not_cut_by_body_timeout(
    make_gateway: GatewayFactory, service: tuple[EchoService, int], issuer: Issuer
) -> None:
    """server.body_timeout is not a gRPC call's deadline: a bidi stream whose client says nothing for
    longer goes on (grpc-timeout bounds the call, send_timeout a client that stops reading)."""
    gw = await make_gateway(GRPC_CONFIG.replace("  http2: true\n", "  http2: true\n  body_timeout: 200ms\n"),
                            grpc_port=service[1])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.proxy_port}", options=GRPC_OPTIONS) as ch:
        call = ch.stream_stream("/test.Echo/Bidi")(metadata=_auth(issuer.token()))
        await call.write(b"first")
        assert await call.read() == b"echo:first"
        await asyncio.sleep(0.6)  # three body_timeouts of silence (under upstream.timeout, 1 s here)
        await call.write(b"second")
        assert await call.read() == b"echo:second"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_large_messages_stream_both_ways(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    token = issuer.token()
    big = bytes(range(256)) * (12 * MB // 256)  # 12 MB in one message: far past every flow-control window
    assert await channel.unary_unary("/test.Echo/Unary")(big, metadata=_auth(token)) == big
    replies = channel.unary_stream("/test.Echo/ServerStream")(json.dumps([8, 2 * MB]).encode(), metadata=_auth(token))
    assert [len(m) async for m in replies] == [2 * MB] * 8


async def test_claims_reach_the_service_as_metadata(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    token = issuer.token(email="alice@example.com")
    seen = dict(map(tuple, json.loads(await channel.unary_unary("/test.Echo/Metadata")(b"", metadata=_auth(token)))))
    assert seen["x-user-id"] == "alice"
    assert seen["x-user-email"] == "alice@example.com"
    assert seen["authorization"] == f"Bearer {token}"
    assert seen["x-forwarded-proto"] == "http"


@pytest.mark.parametrize(
    ("path", "claims", "code", "message", "challenge"),
    [
        ("/test.Echo/Unary", None, grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required", 'Bearer realm="gateway"'),
        ("/test.Echo/Unary", {"exp": 1}, grpc.StatusCode.UNAUTHENTICATED, "the token has expired", 'error="invalid_token"'),
        ("/test.Echo/Unary", {"aud": "other"}, grpc.StatusCode.UNAUTHENTICATED, "the token's audience is not accepted", 'error="invalid_token"'),
        ("/test.Admin/Unary", {"scope": "read"}, grpc.StatusCode.PERMISSION_DENIED, "the token lacks a claim this route requires", 'error="insufficient_scope"'),
    ],
    ids=["no-token", "expired", "wrong-audience", "missing-scope"],
)
async def test_refusals_are_grpc_answers(
    channel: grpc.aio.Channel, issuer: Issuer, path: str, claims: dict[str, Any] | None,
    code: grpc.StatusCode, message: str, challenge: str,
) -> None:
    metadata = () if claims is None else _auth(issuer.token(**claims))
    call = channel.unary_unary(path)(b"x", metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    assert info.value.details() == message
    trailing = dict(info.value.trailing_metadata() or ())
    assert challenge in trailing["www-authenticate"]


async def test_refusal_on_the_wire_is_http_200_trailers_only(gateway: GatewayProcess) -> None:
    client = await H2Client.connect(gateway.proxy_port)
    try:
        headers = [("content-type", "application/grpc"), ("te", "trailers")]
        response = await client.request("POST", "/test.Echo/Unary", headers, body=b"\0\0\0\0\0", port=gateway.proxy_port)
    finally:
        await client.close()
    assert response.status == 200
    assert response.body == b"" and response.trailers == []  # one HEADERS frame that ends the stream
    assert response.header("grpc-status") == "16"
    assert response.header("grpc-message") == "a bearer token is required"
    assert response.header("www-authenticate") == 'Bearer realm="gateway"'
    assert gateway.metrics.registry.get_sample_value(
        "gateway_requests_total", {"listener": "proxy", "route": "grpc", "code": "401"}
    ) == 1.0  # counted as what it is


async def test_deadline_is_honoured_and_the_service_sees_the_cancel(
    channel: grpc.aio.Channel, issuer: Issuer, service: tuple[EchoService, int]
) -> None:
    call = channel.unary_unary("/test.Echo/Slow")(b"10", metadata=_auth(issuer.token()), timeout=0.3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(service[0].cancelled.wait(), 5)


async def test_grpc_timeout_bounds_the_upstream_wait(gateway: GatewayProcess, issuer: Issuer) -> None:
    """Without a client-side deadline of its own, the gateway still stops waiting at grpc-timeout (upstream.timeout is 1 s)."""
    client = await H2Client.connect(gateway.proxy_port)
    try:
        headers = [
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "200m"),
            ("authorization", f"Bearer {issuer.token()}"),
        ]
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.request("POST", "/test.Echo/Slow", headers, body=b"\0\0\0\0\x015", port=gateway.proxy_port)
        assert loop.time() - started < 0.9
    finally:
        await client.close()
    assert response.status == 200
    assert response.header("grpc-status") == "14"  # SPEC: 504 maps to UNAVAILABLE
    assert response.header("grpc-message") == "the upstream did not answer in time"


async def test_upstream_down_is_unavailable(make_gateway: GatewayFactory, issuer: Issuer) -> None:
    from tests.proxy.harness import free_port

    gw = await make_gateway(GRPC_CONFIG, grpc_port=free_port())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.proxy_port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ch.unary_unary("/test.Echo/Unary")(b"x", metadata=_auth(issuer.token()))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "the upstream could not be reached"


async def test_upstream_timeout_applies_without_grpc_timeout(channel: grpc.aio.Channel, issuer: Issuer) -> None:
    """No deadline on the call: upstream.timeout (1 s here) still bounds the wait, as for HTTP/1.1 (504 -> UNAVAILABLE)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/test.Echo/Slow")(b"10", metadata=_auth(issuer.token()))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "the upstream did not answer in time"


async def test_http1_client_gets_the_trailers_after_the_last_chunk(gateway: GatewayProcess, issuer: Issuer) -> None:
    """An HTTP/2 upstream's trailers reach an HTTP/1.1 client in the chunked trailer section (RFC 9112 §7.1.2)."""
    message = b"\x00\x00\x00\x00\x02hi"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(
        b"POST /test.Echo/Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
        b"Authorization: Bearer " + issuer.token().encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(message) + message
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head
    rest = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n"), 5)
    assert rest.endswith(b"%x\r\n%b\r\n0\r\n" % (len(message), message))
    trailer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"grpc-status: 0\r\n" in trailer
    writer.close()


async def test_a_restarted_service_is_reached_on_a_new_connection(
    make_gateway: GatewayFactory, issuer: Issuer
) -> None:
    """The upstream's GOAWAY and close retire the pooled connection; the next call opens a fresh one."""
    from tests.proxy.harness import free_port

    port = free_port()

    async def serve() -> grpc.aio.Server:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([EchoService().handler("test.Echo")])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    server = await serve()
    gw = await make_gateway(GRPC_CONFIG, grpc_port=port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.proxy_port}") as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        assert await call(b"one", metadata=_auth(issuer.token())) == b"one"
        await server.stop(None)
        server = await serve()
        try:
            assert await call(b"two", metadata=_auth(issuer.token())) == b"two"
        finally:
            await server.stop(None)
