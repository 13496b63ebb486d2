"""HTTP/2 on the proxy port (server.http2): h2c with prior knowledge, the same answers as HTTP/1.1, limits, floods."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame

from gateway.http2 import MAX_CONCURRENT_STREAMS, RESET_BUDGET
from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, url
from tests.proxy.h2client import H2Client, H2Response
from tests.proxy.harness import Issuer, Upstream, wait_for
from tests.proxy.pki import Pki, fetch, fetch_port, tls_block, with_tls

HTTP2_CONFIG = BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  http2: true\n")


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> GatewayProcess:
    return await make_gateway(HTTP2_CONFIG)


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[H2Client]:
    c = await H2Client.connect(gateway.proxy_port)
    yield c
    await c.close()


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _seen(response: H2Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(response.body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_valid_token_is_forwarded_with_claim_headers(
    gateway: GatewayProcess, client: H2Client, issuer: Issuer
) -> None:
    token = issuer.token(email="alice@example.com")
    response = await client.request("GET", "/api/orders?x=1", _bearer(token), port=gateway.proxy_port)
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/api/orders?x=1"
    seen = _seen(response)
    assert seen["x-user-id"] == ["alice"]
    assert seen["x-user-email"] == ["alice@example.com"]
    assert seen["host"] == [f"127.0.0.1:{gateway.proxy_port}"]  # from :authority
    assert not any(name.startswith(":") for name in seen)  # pseudo-headers never forwarded as headers
    assert [v for n, v in response.headers if n == "set-cookie"] == ["a=1", "b=2"]
    assert all(n == n.lower() for n, _ in response.headers)


@pytest.mark.parametrize(
    ("path", "headers", "status", "error"),
    [
        ("/api/x", [], 401, "unauthorized"),
        ("/api/x", [("authorization", "Bearer not-a-token")], 401, "invalid_token"),
        ("/nowhere", [], 404, "not_found"),
        ("/public/..%2fadmin", [], 400, "invalid_path"),
        ("/api/x?access_token=a.b.c", [("authorization", "Bearer a.b.c")], 400, "invalid_request"),
    ],
)
async def test_refusals_match_http1(
    gateway: GatewayProcess, client: H2Client, http: aiohttp.ClientSession,
    path: str, headers: list[tuple[str, str]], status: int, error: str,
) -> None:
    response = await client.request("GET", path, headers, port=gateway.proxy_port)
    async with http.get(url(gateway, path), headers=headers) as http1:
        http1_body = json.loads(await http1.read())
        assert http1.status == status
    assert response.status == status
    body = json.loads(response.body)
    assert body["error"] == error == http1_body["error"]
    assert body["error_description"] == http1_body["error_description"]
    assert response.header("www-authenticate") == http1.headers.get("WWW-Authenticate")
    assert response.header("x-request-id") == body["request_id"]


async def test_insufficient_scope_is_403(gateway: GatewayProcess, client: H2Client, issuer: Issuer) -> None:
    response = await client.request("GET", "/admin/x", _bearer(issuer.token(scope="read")), port=gateway.proxy_port)
    assert response.status == 403
    assert json.loads(response.body)["error"] == "insufficient_scope"


async def test_path_is_normalized_like_http1(
    gateway: GatewayProcess, client: H2Client, issuer: Issuer, upstream: Upstream
) -> None:
    response = await client.request("GET", "/api/./a//b/../c", _bearer(issuer.token()), port=gateway.proxy_port)
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/api/a/c"


async def test_many_streams_on_one_connection(gateway: GatewayProcess, client: H2Client, issuer: Issuer) -> None:
    token = issuer.token()
    responses = await asyncio.gather(
        *(client.request("GET", f"/api/{i}", _bearer(token), port=gateway.proxy_port) for i in range(50))
    )
    assert [json.loads(r.body)["path"] for r in responses] == [f"/api/{i}" for i in range(50)]


async def test_large_bodies_stream_both_ways(gateway: GatewayProcess, client: H2Client, issuer: Issuer) -> None:
    token = issuer.token()
    size = 5 * 1024 * 1024  # well past the stream and connection windows
    up = await client.request("POST", "/upload", _bearer(token), body=b"u" * size, port=gateway.proxy_port)
    assert up.status == 200
    assert json.loads(up.body) == {"received": size}
    down = await client.request("GET", f"/download/{size}", _bearer(token), port=gateway.proxy_port)
    assert down.status == 200
    assert len(down.body) == size


async def test_http1_still_served_beside_http2(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 200


async def test_a_field_longer_than_max_header_bytes_is_431(gateway: GatewayProcess, client: H2Client) -> None:
    response = await client.request("GET", "/api/x", [("x-big", "v" * 20000)], port=gateway.proxy_port)
    assert response.status == 431
    ok = await client.request("GET", "/public/x", port=gateway.proxy_port)
    assert ok.status == 200  # the connection goes on


async def test_header_list_past_the_limit_ends_the_connection(gateway: GatewayProcess, client: H2Client) -> None:
    headers = [(f"x-h{i}", "v" * 8000) for i in range(12)]  # ~96 KB: past SETTINGS_MAX_HEADER_LIST_SIZE
    client.start("GET", "/api/x", headers, port=gateway.proxy_port)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert _errors(gateway, "header_list_size") == 1


def _errors(gateway: GatewayProcess, reason: str) -> float:
    return gateway.metrics.http2_errors.labels(reason)._value.get()


async def test_rapid_reset_ends_the_connection_and_others_are_served(
    gateway: GatewayProcess, issuer: Issuer
) -> None:
    attacker = await H2Client.connect(gateway.proxy_port)
    bystander = await H2Client.connect(gateway.proxy_port)
    token = issuer.token()
    try:
        for _ in range(RESET_BUDGET + 50):  # CVE-2023-44487: open and cancel at once, never wait
            stream_id = attacker.start("GET", "/slow?delay=5", _bearer(token), port=gateway.proxy_port)
            attacker.h2.reset_stream(stream_id)
            attacker.flush()
        await asyncio.wait_for(attacker.closed.wait(), 5)
        assert attacker.error is None
        assert attacker.goaway is not None and attacker.goaway.error_code == 0xB  # ENHANCE_YOUR_CALM
        assert _errors(gateway, "rapid_reset") == 1
        response = await bystander.request("GET", "/api/x", _bearer(token), port=gateway.proxy_port)
        assert response.status == 200
        await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)  # every reset stream's work ended
    finally:
        await attacker.close()
        await bystander.close()


async def test_streams_reset_before_their_work_began_give_their_admission_back(
    make_gateway: GatewayFactory, issuer: Issuer
) -> None:
    """A stream opened and reset in one read is cancelled before its task ever ran: its place under
    server.max_inflight (and the connection's task cap) must still be given back, or resets would leak it."""
    gateway = await make_gateway(HTTP2_CONFIG.replace("  http2: true\n", "  http2: true\n  max_inflight: 20\n"))
    token = issuer.token()
    attacker = await H2Client.connect(gateway.proxy_port)
    try:
        for _ in range(RESET_BUDGET // 2):  # under every reset budget: the connection stays open
            attacker.h2.reset_stream(attacker.start("GET", "/slow?delay=5", _bearer(token), port=gateway.proxy_port))
        attacker.flush()
        # The cancelled tasks end a loop turn or two later; until then they hold their places.
        for _ in range(100):
            if (await attacker.request("GET", "/api/x", _bearer(token), port=gateway.proxy_port)).status == 200:
                break
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*(
            attacker.request("GET", "/api/x", _bearer(token), port=gateway.proxy_port) for _ in range(15)
        ))
        assert [a.status for a in answers] == [200] * 15
    finally:
        await attacker.close()


async def test_a_slow_rapid_reset_is_caught_by_its_share_of_resets(gateway: GatewayProcess, issuer: Issuer) -> None:
    """Batches of resets that never reach RESET_BUDGET within one second: the connection is still ended once
    more than RESET_BUDGET of its streams, and over half of all it opened, were reset before their answer."""
    attacker = await H2Client.connect(gateway.proxy_port)
    token = issuer.token()
    batch = RESET_BUDGET // 2
    try:
        for _ in range(3):
            for _ in range(batch):
                attacker.h2.reset_stream(attacker.start("GET", "/slow?delay=5", _bearer(token), port=gateway.proxy_port))
            attacker.flush()
            if attacker.closed.is_set():
                break
            await asyncio.sleep(1.1)  # a fresh one-second window for the next batch
        await asyncio.wait_for(attacker.closed.wait(), 5)
        assert attacker.goaway is not None and attacker.goaway.error_code == 0xB  # ENHANCE_YOUR_CALM
        assert _errors(gateway, "rapid_reset") == 1
    finally:
        await attacker.close()


async def test_a_client_that_cancels_some_streams_is_not_cut_off(gateway: GatewayProcess, issuer: Issuer) -> None:
    """More resets in all than RESET_BUDGET, but no more than the answered streams: an ordinary client's life."""
    client = await H2Client.connect(gateway.proxy_port)
    token = issuer.token()
    try:
        for _ in range(RESET_BUDGET + 20):
            assert (await client.request("GET", "/api/x", _bearer(token), port=gateway.proxy_port)).status == 200
            client.h2.reset_stream(client.start("GET", "/slow?delay=5", _bearer(token), port=gateway.proxy_port))
            client.flush()
            await asyncio.sleep(0.01)  # well under RESET_BUDGET resets a second
        assert (await client.request("GET", "/api/x", _bearer(token), port=gateway.proxy_port)).status == 200
        assert not client.closed.is_set() and client.goaway is None
        assert _errors(gateway, "rapid_reset") == 0
    finally:
        await client.close()


async def test_continuation_flood_ends_the_connection(gateway: GatewayProcess, client: H2Client) -> None:
    assert client.writer is not None
    headers = HeadersFrame(1)
    headers.data = client.h2.encoder.encode([(":method", "GET"), (":path", "/api/x"), (":scheme", "http")])
    client.writer.write(headers.serialize())
    for _ in range(200):  # CONTINUATION frames without END_HEADERS: a header block that never ends
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00" * 1024
        client.writer.write(continuation.serialize())
    await asyncio.wait_for(client.closed.wait(), 5)
    assert _errors(gateway, "continuation_flood") == 1


async def test_ping_flood_ends_the_connection(gateway: GatewayProcess, client: H2Client) -> None:
    for i in range(300):
        client.h2.ping(i.to_bytes(8, "big"))
    client.flush()
    await asyncio.wait_for(client.closed.wait(), 5)
    assert _errors(gateway, "ping_flood") == 1


async def test_settings_flood_ends_the_connection(gateway: GatewayProcess, client: H2Client) -> None:
    for _ in range(300):
        client.h2.update_settings({0x4: 65535})
    client.flush()
    await asyncio.wait_for(client.closed.wait(), 5)
    assert _errors(gateway, "settings_flood") == 1


async def test_streams_beyond_the_limit_are_refused(gateway: GatewayProcess, client: H2Client, issuer: Issuer) -> None:
    token = issuer.token()
    await client.request("GET", "/public/x", port=gateway.proxy_port)  # the server's SETTINGS are in
    assert client.h2.remote_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    slow = [client.start("GET", "/slow?delay=0.5", _bearer(token), port=gateway.proxy_port) for _ in range(MAX_CONCURRENT_STREAMS)]
    results = await asyncio.gather(*(asyncio.wait_for(client.done[s], 10) for s in slow))
    assert all(r.status == 200 for r in results)


async def test_drain_sends_goaway_and_finishes_open_streams(
    gateway: GatewayProcess, client: H2Client, issuer: Issuer, upstream: Upstream
) -> None:
    stream_id = client.start("GET", "/slow?delay=0.3", _bearer(issuer.token()), port=gateway.proxy_port)
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    stopping = asyncio.ensure_future(gateway.stop())
    response = await asyncio.wait_for(client.done[stream_id], 5)
    assert response.status == 200
    await stopping
    await asyncio.wait_for(client.closed.wait(), 5)


async def test_tls_alpn_h2_and_http11_on_one_port(make_gateway: GatewayFactory, tmp_path: Path, issuer: Issuer) -> None:
    pki = Pki(tmp_path)
    gw = await make_gateway(with_tls(tls_block()).replace("  tls:\n", "  http2: true\n  tls:\n"))
    ctx = pki.client_ctx()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = await H2Client.connect(gw.proxy_port, ctx)
    try:
        assert client.writer is not None
        assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        response = await client.request("GET", "/api/x", _bearer(issuer.token()), port=gw.proxy_port)
        assert response.status == 200
        assert _seen(response)["x-forwarded-proto"] == ["https"]
    finally:
        await client.close()
    status, _ = await fetch(gw, pki.client_ctx(), "/public/x")  # no ALPN offered: HTTP/1.1
    assert status == 200


async def test_uvloop_process_negotiates_h2_by_alpn(proc_factory, issuer: Issuer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`gateway run` as deployed (uvloop's TLS transport): h2 by ALPN, HTTP/1.1 without it, on one port.
    (h2c by preface under uvloop: the attack-wave test below.)"""
    pki = Pki(tmp_path)
    _, port = await proc_factory(with_tls(tls_block()).replace("  tls:\n", "  http2: true\n  tls:\n"))
    ctx = pki.client_ctx()
    ctx.set_alpn_protocols(["h2"])
    client = await H2Client.connect(port, ctx)
    try:
        response = await client.request("GET", "/api/x", _bearer(issuer.token()), port=port)
        assert response.status == 200
    finally:
        await client.close()
    assert (await fetch_port(port, pki.client_ctx(), "/public/x"))[0] == 200


async def test_attack_waves_leave_memory_bounded_and_others_served(proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    """Rapid reset, CONTINUATION and PING floods, wave after wave against `gateway run`: every wave's
    connections are ended, a bystander's requests all pass, and the process's peak RSS barely moves."""
    proc, port = await proc_factory(HTTP2_CONFIG)
    token = issuer.token()
    bystander = await H2Client.connect(port)

    async def served() -> None:
        assert (await bystander.request("GET", "/api/x", _bearer(token), port=port)).status == 200

    async def rapid_reset() -> None:
        attacker = await H2Client.connect(port)
        for _ in range(RESET_BUDGET + 50):
            stream_id = attacker.start("GET", "/slow?delay=5", _bearer(token), port=port)
            attacker.h2.reset_stream(stream_id)
            attacker.flush()
        await asyncio.wait_for(attacker.closed.wait(), 10)
        await attacker.close()

    async def continuation_flood() -> None:
        attacker = await H2Client.connect(port)
        assert attacker.writer is not None
        head = HeadersFrame(1)
        head.data = attacker.h2.encoder.encode([(":method", "GET"), (":path", "/api/x"), (":scheme", "http")])
        frames = [head.serialize()]
        for _ in range(100):
            continuation = ContinuationFrame(1)
            continuation.data = b"\x00" * 16000
            frames.append(continuation.serialize())
        attacker.writer.write(b"".join(frames))
        await asyncio.wait_for(attacker.closed.wait(), 10)
        await attacker.close()

    async def ping_flood() -> None:
        attacker = await H2Client.connect(port)
        for i in range(1000):
            attacker.h2.ping(i.to_bytes(8, "big"))
        attacker.flush()
        await asyncio.wait_for(attacker.closed.wait(), 10)
        await attacker.close()

    try:
        for _ in range(20):
            await served()
        baseline = proc.peak_rss_kib()
        for _ in range(15):
            await asyncio.gather(rapid_reset(), continuation_flood(), ping_flood(), served())
        await served()
        growth_mib = (proc.peak_rss_kib() - baseline) / 1024
        assert growth_mib < 24, f"peak RSS grew {growth_mib:.1f} MiB"
    finally:
        await bystander.close()
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as resp:
        text = await resp.text()
    for reason in ("rapid_reset", "continuation_flood", "ping_flood"):
        assert f'gateway_http2_errors_total{{reason="{reason}"}} 15.0' in text


async def test_client_goaway_abandons_open_streams(
    gateway: GatewayProcess, client: H2Client, issuer: Issuer, upstream: Upstream
) -> None:
    client.start("GET", "/slow?delay=5", _bearer(issuer.token()), port=gateway.proxy_port)
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    client.h2.close_connection()
    client.flush()
    await asyncio.wait_for(upstream.cancelled.wait(), 5)  # the upstream exchange is cancelled too
    await wait_for(lambda: gateway.metrics.inflight._value.get() == 0)
    other = await H2Client.connect(gateway.proxy_port)
    try:
        assert (await other.request("GET", "/public/x", port=gateway.proxy_port)).status == 200
    finally:
        await other.close()


async def test_a_client_with_no_window_gets_its_stream_reset_not_a_crash(gateway: GatewayProcess) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE 0: a local reply's body cannot be sent; the stream is reset, the connection serves on."""
    client = H2Client()
    client.h2.local_settings = type(client.h2.local_settings)(client=True, initial_values={0x4: 0})
    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    client.h2.initiate_connection()
    client.flush()
    client._task = asyncio.get_running_loop().create_task(client._read())
    try:
        refused = await client.request("GET", "/api/x", port=gateway.proxy_port)
        assert refused.status == 401 and refused.reset is not None and refused.body == b""
        head = await client.request("HEAD", "/nowhere", port=gateway.proxy_port)
        assert head.status == 404 and head.reset is None  # no body to send: answered whole
    finally:
        await client.close()
