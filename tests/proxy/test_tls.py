"""TLS on the proxy port: real handshakes against a CA made here, client certificates, versions, renewal under load."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

import gateway.tls
from gateway.server import GatewayProcess
from tests.proxy.conftest import GatewayFactory, admin_url
from tests.proxy.harness import Issuer, wait_for
from tests.proxy.pki import (
    KubeSecretDir,
    Pki,
    fetch,
    fetch_port,
    legacy_client_context,
    legacy_server_context,
    refused,
    tls_block,
    with_tls,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # The product polls every second; tests need not wait that long for a renewal to show.
    monkeypatch.setattr(gateway.tls, "POLL_SECONDS", 0.05)


async def served_certificate(port: int, ctx: ssl.SSLContext, server_name: str = "localhost") -> x509.Certificate:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()


async def version_refused(port: int, ctx: ssl.SSLContext) -> None:
    """The handshake fails: with a protocol_version alert, or a reset when the server closes before it is read."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    except ssl.SSLError as exc:
        assert exc.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    except ConnectionResetError:
        pass
    else:
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        raise AssertionError(f"handshake completed with {version}")


def tls_reloads(process: GatewayProcess, result: str) -> float:
    value = process.metrics.registry.get_sample_value("gateway_tls_reloads_total", {"result": result})
    return value or 0.0


async def test_https_request_is_forwarded_with_forwarded_proto_https(make_gateway: GatewayFactory, pki: Pki, issuer: Any) -> None:
    gw = await make_gateway(with_tls(tls_block()))
    status, body = await fetch(gw, pki.client_ctx(), "/api/x", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert status == 200
    headers = {k.lower(): v for k, v in body["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-user-id"] == "alice"
    # The admin port stays plain HTTP.
    async with aiohttp.ClientSession() as http, http.get(admin_url(gw, "/healthz")) as resp:
        assert resp.status == 200


async def test_plain_http_on_the_tls_port_gets_no_http_answer(make_gateway: GatewayFactory, pki: Pki) -> None:
    gw = await make_gateway(with_tls(tls_block()))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    writer.write(b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(1 << 16), 5)
    writer.close()
    assert not data.startswith(b"HTTP/")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://127.0.0.1:{gw.proxy_port}/public/x")


# client_auth x what the client presents -> served (True) or refused (False).
CLIENT_AUTH_MATRIX = [
    ("none", "no_cert", True),
    ("none", "ca_cert", True),  # not asked for: the connection carries no certificate
    ("none", "other_ca_cert", True),
    ("optional", "no_cert", True),
    ("optional", "ca_cert", True),
    ("optional", "other_ca_cert", False),  # a certificate sent must verify
    ("required", "no_cert", False),
    ("required", "ca_cert", True),
    ("required", "other_ca_cert", False),
]


@pytest.mark.parametrize(("client_auth", "presented", "served"), CLIENT_AUTH_MATRIX, ids=[f"{a}-{p}" for a, p, _ in CLIENT_AUTH_MATRIX])
async def test_client_auth(make_gateway: GatewayFactory, pki: Pki, client_auth: str, presented: str, served: bool) -> None:
    gw = await make_gateway(with_tls(tls_block(client_auth)))
    cert = {"no_cert": None, "ca_cert": pki.client, "other_ca_cert": pki.stranger}[presented]
    ctx = pki.client_ctx(cert)
    if served:
        status, body = await fetch(gw, ctx)
        assert status == 200 and body["path"] == "/public/x"
    else:
        assert await refused(gw, ctx)
    # The server's answer does not depend on earlier connections: the next good client is served.
    assert (await fetch(gw, pki.client_ctx(pki.client)))[0] == 200


async def test_tls_1_1_refused_at_min_1_2(make_gateway: GatewayFactory, pki: Pki, tmp_path: Path) -> None:
    legacy = legacy_client_context(pki.ca, ssl.TLSVersion.TLSv1_1)
    # Control: this client really completes a TLS 1.1 handshake with a server that allows it,
    # so the gateway's refusal below is the gateway's doing, not the client's.
    control = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=legacy_server_context(pki.server, tmp_path, ssl.TLSVersion.TLSv1_1)
    )
    port = control.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=legacy, server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
    writer.close()
    control.close()

    gw = await make_gateway(with_tls(tls_block(min_version="1.2")))
    await version_refused(gw.proxy_port, legacy)
    assert (await fetch(gw, legacy_client_context(pki.ca, ssl.TLSVersion.TLSv1_2)))[0] == 200


async def test_tls_1_2_refused_at_min_1_3(make_gateway: GatewayFactory, pki: Pki) -> None:
    tls12 = legacy_client_context(pki.ca, ssl.TLSVersion.TLSv1_2)
    gw = await make_gateway(with_tls(tls_block(min_version="1.3")))
    await version_refused(gw.proxy_port, tls12)
    _, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port, ssl=pki.client_ctx(), server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()


class Load:
    """Requests on fresh connections (a handshake each) and on one keep-alive connection, until stopped."""

    def __init__(self, process: GatewayProcess, ctx: ssl.SSLContext) -> None:
        self.process = process
        self.ctx = ctx
        self.ok = 0
        self.failures: list[str] = []
        self.keepalive_requests = 0
        self.keepalive_cert: int | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _fresh(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = await fetch(self.process, self.ctx)
            except aiohttp.ClientError as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"status {status}")

    async def _keepalive(self) -> None:
        # One connection, opened before any renewal, used for the whole test: a reset would fail it.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.process.proxy_port, ssl=self.ctx, server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.keepalive_cert = x509.load_der_x509_certificate(der).serial_number
        try:
            while not self._stop.is_set():
                writer.write(b"GET /public/k HTTP/1.1\r\nHost: gw\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200 "):
                    self.ok += 1
                    self.keepalive_requests += 1
                else:
                    self.failures.append(head.split(b"\r\n", 1)[0].decode())
                await asyncio.sleep(0.005)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.failures.append(f"keep-alive connection: {exc!r}")
        finally:
            writer.close()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._fresh()) for _ in range(3)]
        self._tasks.append(asyncio.create_task(self._keepalive()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.fixture
async def secret(tmp_path: Path, pki: Pki) -> AsyncIterator[KubeSecretDir]:
    mount = KubeSecretDir(tmp_path / "secret")
    mount.publish({"tls.crt": pki.server.cert_pem, "tls.key": pki.server.key_pem, "ca.crt": pki.ca.own.cert_pem})
    yield mount


SECRET_TLS = "    cert_file: secret/tls.crt\n    key_file: secret/tls.key\n"


async def test_renewal_under_load_drops_no_request(make_gateway: GatewayFactory, pki: Pki, secret: KubeSecretDir) -> None:
    gw = await make_gateway(with_tls(SECRET_TLS))
    load = Load(gw, pki.client_ctx())
    load.start()
    await wait_for(lambda: load.ok >= 10 and load.keepalive_requests >= 1)
    served = [pki.server]
    for generation in range(3):
        renewed = pki.ca.issue(f"gateway-gen{generation + 2}", server=True)
        secret.publish({"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem})  # kubelet's symlink swap
        served.append(renewed)
        before = load.ok
        for _ in range(200):
            cert = await served_certificate(gw.proxy_port, pki.client_ctx())
            if cert.serial_number == renewed.cert.serial_number:
                break
            await asyncio.sleep(0.02)
        assert cert.serial_number == renewed.cert.serial_number
        # A client naming an IP address sends no SNI; the callback runs for it too.
        no_sni = await served_certificate(gw.proxy_port, pki.client_ctx(), server_name="127.0.0.1")
        assert no_sni.serial_number == renewed.cert.serial_number
        await wait_for(lambda before=before, k=load.keepalive_requests: load.ok >= before + 10 and load.keepalive_requests > k)  # type: ignore[misc]
    await load.stop()
    assert load.failures == []
    assert tls_reloads(gw, "ok") == 3 and tls_reloads(gw, "error") == 0
    expiry = gw.metrics.registry.get_sample_value("gateway_tls_certificate_expiry_timestamp_seconds")
    assert expiry == served[-1].cert.not_valid_after_utc.timestamp()
    # The keep-alive connection opened before the first renewal kept its session (and certificate).
    assert load.keepalive_cert == pki.server.cert.serial_number
    assert load.keepalive_requests >= 4  # at least one before and one after each renewal


async def test_a_pair_that_does_not_match_is_refused_and_the_old_one_serves(
    make_gateway: GatewayFactory, pki: Pki, secret: KubeSecretDir, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway(with_tls(SECRET_TLS))
    other = pki.ca.issue("gateway-next", server=True)
    secret.publish({"tls.crt": other.cert_pem, "tls.key": pki.server.key_pem})  # key of the old cert
    await wait_for(lambda: tls_reloads(gw, "error") == 1)
    refusal = next(r for r in caplog.records if r.name == "gateway.tls" and r.levelname == "ERROR")
    assert refusal.__dict__["key"] == "server.tls.key_file"
    assert refusal.__dict__["error"] == "the private key does not match the certificate"
    assert (await served_certificate(gw.proxy_port, pki.client_ctx())).serial_number == pki.server.cert.serial_number
    assert (await fetch(gw, pki.client_ctx()))[0] == 200
    secret.publish({"tls.crt": b"not a certificate\n", "tls.key": other.key_pem})
    await wait_for(lambda: tls_reloads(gw, "error") == 2)
    assert (await fetch(gw, pki.client_ctx()))[0] == 200
    expired = pki.ca.issue("gateway-expired", server=True, expired=True)
    secret.publish({"tls.crt": expired.cert_pem, "tls.key": expired.key_pem})
    await wait_for(lambda: tls_reloads(gw, "error") == 3)
    assert (await served_certificate(gw.proxy_port, pki.client_ctx())).serial_number == pki.server.cert.serial_number
    # The next good pair is taken.
    secret.publish({"tls.crt": other.cert_pem, "tls.key": other.key_pem})
    await wait_for(lambda: tls_reloads(gw, "ok") == 1)
    assert (await served_certificate(gw.proxy_port, pki.client_ctx())).serial_number == other.cert.serial_number


async def test_client_ca_file_is_watched_too(make_gateway: GatewayFactory, pki: Pki, secret: KubeSecretDir) -> None:
    block = SECRET_TLS + "    client_ca_file: secret/ca.crt\n    client_auth: required\n"
    gw = await make_gateway(with_tls(block))
    assert (await fetch(gw, pki.client_ctx(pki.client)))[0] == 200
    assert await refused(gw, pki.client_ctx(pki.stranger))
    # The client CA is replaced by the other CA: its clients get in, the old CA's no longer do.
    secret.publish({"tls.crt": pki.server.cert_pem, "tls.key": pki.server.key_pem, "ca.crt": pki.other_ca.own.cert_pem})
    await wait_for(lambda: tls_reloads(gw, "ok") == 1)
    assert (await fetch(gw, pki.client_ctx(pki.stranger)))[0] == 200
    assert await refused(gw, pki.client_ctx(pki.client))


async def test_config_reload_applies_new_tls_settings(make_gateway: GatewayFactory, pki: Pki, tmp_path: Path) -> None:
    gw = await make_gateway(with_tls(tls_block("none")))
    assert (await fetch(gw, pki.client_ctx()))[0] == 200
    config = tmp_path / "gateway.yaml"
    config.write_text(config.read_text().replace(tls_block("none"), tls_block("required")))
    assert await gw.reload()
    assert await refused(gw, pki.client_ctx())
    assert (await fetch(gw, pki.client_ctx(pki.client)))[0] == 200
    assert tls_reloads(gw, "ok") == 1
    # A reload that leaves server.tls as it was does not rebuild the context.
    config.write_text(config.read_text().replace("shutdown_grace: 2s", "shutdown_grace: 3s"))
    assert await gw.reload()
    assert tls_reloads(gw, "ok") == 1


async def test_renewal_in_a_gateway_process_with_two_workers(  # type: ignore[no-untyped-def]
    proc_factory, issuer: Issuer, pki: Pki, secret: KubeSecretDir
) -> None:
    """`gateway run` as deployed (uvloop, SO_REUSEPORT workers): every worker serves the renewed certificate."""
    mtls = SECRET_TLS + "    client_ca_file: secret/ca.crt\n    client_auth: optional\n"
    _, port = await proc_factory(with_tls(mtls).replace("  shutdown_grace: 2s\n", "  shutdown_grace: 2s\n  workers: 2\n"))
    headers = {"Authorization": f"Bearer {issuer.token()}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_ctx(), force_close=True)) as http:
        async with http.get(f"https://127.0.0.1:{port}/api/x", headers=headers) as resp:
            assert resp.status == 200
    # uvloop's TLS transport hands over the client certificate: a bound token passes over its own only.
    bound = {"Authorization": f"Bearer {issuer.token(cnf={'x5t#S256': pki.client.thumbprint})}"}
    for cert, expected in ((pki.client, 200), (pki.client_b, 401), (None, 401)):
        assert (await fetch_port(port, pki.client_ctx(cert), "/api/x", headers=bound))[0] == expected
    renewed = pki.ca.issue("gateway-renewed", server=True)
    secret.publish({"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem, "ca.crt": pki.ca.own.cert_pem})

    async def all_renewed() -> bool:
        # Fresh connections, spread by the kernel over both workers.
        serials = {(await served_certificate(port, pki.client_ctx())).serial_number for _ in range(16)}
        return serials == {renewed.cert.serial_number}

    for _ in range(100):  # the product polls every second: allow a few polls
        if await all_renewed():
            break
        await asyncio.sleep(0.05)
    assert await all_renewed()
