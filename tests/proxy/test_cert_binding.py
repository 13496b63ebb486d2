"""Certificate-bound tokens (RFC 8705 §3) end to end: real mutual-TLS handshakes, the binding checked on every request."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.harness import Issuer
from tests.proxy.pki import Issued, Pki, fetch, tls_block, with_tls

BOUND_DESCRIPTION = "the token is bound to a client certificate this connection did not present"


def bound_token(issuer: Issuer, cert: Issued, **claims: Any) -> str:
    return issuer.token(cnf={"x5t#S256": cert.thumbprint}, **claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verify_count(process: GatewayProcess, result: str) -> float:
    value = process.metrics.registry.get_sample_value(
        "gateway_jwt_verify_seconds_count", {"issuer": "corp", "result": result}
    )
    return value or 0.0


def assert_binding_refused(status: int, body: Any) -> None:
    assert status == 401
    assert body["error"] == "invalid_token"
    assert body["error_description"] == BOUND_DESCRIPTION


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def mtls(make_gateway: GatewayFactory, pki: Pki) -> GatewayProcess:
    return await make_gateway(with_tls(tls_block("optional")))


async def test_bound_token_over_its_certificate_passes(mtls: GatewayProcess, pki: Pki, issuer: Issuer) -> None:
    token = bound_token(issuer, pki.client)
    for _ in range(2):  # the second request is served from the token cache: still checked, still passes
        status, body = await fetch(mtls, pki.client_ctx(pki.client), "/api/x", headers=bearer(token))
        assert status == 200 and body["path"] == "/api/x"
    assert verify_count(mtls, "ok") == 2


async def test_bound_token_over_another_certificate_is_refused_cached_or_not(
    mtls: GatewayProcess, pki: Pki, issuer: Issuer
) -> None:
    token = bound_token(issuer, pki.client)
    # Not yet cached: refused.
    status, body = await fetch(mtls, pki.client_ctx(pki.client_b), "/api/x", headers=bearer(token))
    assert_binding_refused(status, body)
    # Cached after a good request: still refused on the wrong connection.
    assert (await fetch(mtls, pki.client_ctx(pki.client), "/api/x", headers=bearer(token)))[0] == 200
    status, body = await fetch(mtls, pki.client_ctx(pki.client_b), "/api/x", headers=bearer(token))
    assert_binding_refused(status, body)
    assert verify_count(mtls, "cert_binding_mismatch") == 2


async def test_bound_token_without_a_client_certificate_is_refused(mtls: GatewayProcess, pki: Pki, issuer: Issuer) -> None:
    status, body = await fetch(mtls, pki.client_ctx(), "/api/x", headers=bearer(bound_token(issuer, pki.client)))
    assert_binding_refused(status, body)


async def test_bound_token_when_client_auth_is_none_is_refused(make_gateway: GatewayFactory, pki: Pki, issuer: Issuer) -> None:
    # The server never asks for a certificate, so none is proven, whatever the client holds.
    gw = await make_gateway(with_tls(tls_block("none")))
    status, body = await fetch(gw, pki.client_ctx(pki.client), "/api/x", headers=bearer(bound_token(issuer, pki.client)))
    assert_binding_refused(status, body)


async def test_unbound_token_passes_with_or_without_a_certificate(mtls: GatewayProcess, pki: Pki, issuer: Issuer) -> None:
    for cert in (None, pki.client):
        assert (await fetch(mtls, pki.client_ctx(cert), "/api/x", headers=bearer(issuer.token())))[0] == 200


async def test_thumbprint_is_the_exact_base64url_of_the_der(mtls: GatewayProcess, pki: Pki, issuer: Issuer) -> None:
    der = pki.client.cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).digest()
    padded = base64.urlsafe_b64encode(digest).decode()  # with '=' padding: not the RFC 8705 form
    std = base64.b64encode(digest).decode().rstrip("=")  # standard alphabet
    hexed = digest.hex()
    assert padded.rstrip("=") == pki.client.thumbprint
    for wrong in {padded, std, hexed} - {pki.client.thumbprint}:
        token = issuer.token(cnf={"x5t#S256": wrong})
        status, body = await fetch(mtls, pki.client_ctx(pki.client), "/api/x", headers=bearer(token))
        assert_binding_refused(status, body)


@pytest.mark.parametrize("cnf", [["x5t#S256"], "abc", {"x5t#S256": 5}, {"x5t#S256": None}], ids=["list", "string", "number", "null"])
async def test_malformed_cnf_is_refused(mtls: GatewayProcess, pki: Pki, issuer: Issuer, cnf: Any) -> None:
    status, body = await fetch(mtls, pki.client_ctx(pki.client), "/api/x", headers=bearer(issuer.token(cnf=cnf)))
    assert status == 401 and body["error"] == "invalid_token"


async def test_bound_token_over_plain_http_is_refused(gateway: GatewayProcess, http: aiohttp.ClientSession, pki: Pki, issuer: Issuer) -> None:
    async with http.get(url(gateway, "/api/x"), headers=bearer(bound_token(issuer, pki.client))) as resp:
        assert_binding_refused(resp.status, await resp.json())
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="gateway", error="invalid_token"')


def xfcc(cert: Issued, *, extra: str = "") -> str:
    der = cert.cert.public_bytes(serialization.Encoding.DER)
    return f'By=spiffe://cluster.local/ns/a/sa/gw;Hash={hashlib.sha256(der).hexdigest()};Subject="CN=client,O=Example, Inc";URI={extra}'


async def test_forwarded_client_cert_is_ignored_by_default(gateway: GatewayProcess, http: aiohttp.ClientSession, pki: Pki, issuer: Issuer) -> None:
    headers = {**bearer(bound_token(issuer, pki.client)), "X-Forwarded-Client-Cert": xfcc(pki.client)}
    async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
        assert_binding_refused(resp.status, await resp.json())


def with_xfcc(peers: str) -> str:
    return BASE_CONFIG.replace(
        "  max_token_bytes: 4096\n", f"  max_token_bytes: 4096\n  forwarded_client_cert:\n    trusted_peers: {peers}\n"
    )


async def test_forwarded_client_cert_from_a_trusted_peer(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, pki: Pki, issuer: Issuer
) -> None:
    gw = await make_gateway(with_xfcc('["127.0.0.1/32"]'))
    token = bound_token(issuer, pki.client)

    async def status(header: list[str]) -> int:
        headers = [("Authorization", f"Bearer {token}"), *(("X-Forwarded-Client-Cert", v) for v in header)]
        async with http.get(url(gw, "/api/x"), headers=headers) as resp:
            return resp.status

    assert await status([xfcc(pki.client)]) == 200
    assert await status([xfcc(pki.client_b)]) == 401  # another certificate
    assert await status([]) == 401  # the proxy sent none
    assert await status([f"{xfcc(pki.client_b)},{xfcc(pki.client)}"]) == 401  # two hops: which one is meant is a guess
    assert await status([xfcc(pki.client), xfcc(pki.client)]) == 401  # the header twice
    assert await status([xfcc(pki.client).replace("Hash=", "Hash=00")]) == 401  # not a SHA-256
    # GET /config shows who is trusted (no secret in it).
    async with http.get(admin_url(gw, "/config")) as resp:
        shown = (await resp.json())["config"]["server"]["forwarded_client_cert"]
    assert shown == {"trusted_peers": ["127.0.0.1/32"], "header": "x-forwarded-client-cert"}


async def test_forwarded_client_cert_from_an_untrusted_peer_is_ignored(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, pki: Pki, issuer: Issuer
) -> None:
    gw = await make_gateway(with_xfcc('["10.0.0.0/8", "::1/128"]'))
    headers = {**bearer(bound_token(issuer, pki.client)), "X-Forwarded-Client-Cert": xfcc(pki.client)}
    async with http.get(url(gw, "/api/x"), headers=headers) as resp:
        assert_binding_refused(resp.status, await resp.json())


def _get_over(port: int, ctx: ssl.SSLContext, token: str, session: ssl.SSLSession | None) -> tuple[int, ssl.SSLSession | None, bool]:
    """One request on a blocking TLS socket, resuming `session` if given: (status, session, reused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(f"GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return int(data.split(b" ", 2)[1]), tls.session, tls.session_reused


async def test_bound_token_on_a_resumed_session(mtls: GatewayProcess, pki: Pki, issuer: Issuer) -> None:
    # A resumed TLS session (no certificate sent again) still proves the certificate of the
    # session it resumes: real clients (curl, Go, browsers) resume.
    ctx = pki.client_ctx(pki.client)
    token = bound_token(issuer, pki.client)
    status, session, reused = await asyncio.to_thread(_get_over, mtls.proxy_port, ctx, token, None)
    assert (status, reused) == (200, False) and session is not None
    status, _, reused = await asyncio.to_thread(_get_over, mtls.proxy_port, ctx, token, session)
    assert (status, reused) == (200, True)
    other = bound_token(issuer, pki.client_b)
    status, _, reused = await asyncio.to_thread(_get_over, mtls.proxy_port, ctx, other, session)
    assert (status, reused) == (401, True)


async def test_bound_token_is_refused_on_the_decision_port(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, pki: Pki, issuer: Issuer
) -> None:
    # The asking proxy's connection proves nothing of its client's certificate, and a
    # forwarded hash is not read there even from a trusted peer (SPEC: Decision mode).
    config = with_xfcc('["127.0.0.1/32"]').replace("server:\n", 'server:\n  authz_listen: "127.0.0.1:0"\n', 1)
    gw = await make_gateway(config)
    check = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/x", "X-Forwarded-Host": "app.example"}

    async def status(token: str) -> int:
        headers = {**check, **bearer(token), "X-Forwarded-Client-Cert": xfcc(pki.client)}
        async with http.get(f"http://127.0.0.1:{gw.authz_port}/check", headers=headers) as resp:
            return resp.status

    assert await status(issuer.token()) == 200
    assert await status(bound_token(issuer, pki.client)) == 401
    # The proxy port, same peer, same header: the binding holds.
    async with http.get(url(gw, "/api/x"), headers={**bearer(bound_token(issuer, pki.client)), "X-Forwarded-Client-Cert": xfcc(pki.client)}) as resp:
        assert resp.status == 200


async def test_a_stalled_tls_handshake_is_closed_after_header_timeout(make_gateway: GatewayFactory, pki: Pki) -> None:
    """A client that connects to the TLS port and never completes the handshake holds it no longer than a slow head."""
    text = with_tls(tls_block("optional")).replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  header_timeout: 300ms\n")
    gateway = await make_gateway(text)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy_port)
    writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and nothing more
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data == b"" and time.monotonic() - started < 5
