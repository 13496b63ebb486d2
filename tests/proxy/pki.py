"""TLS test helpers: a PKI made in the test (CAs, server and client certificates, PEM files) and HTTPS clients."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cert_binding import certificate_thumbprint
from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def thumbprint(self) -> str:
        return certificate_thumbprint(self.cert.public_bytes(serialization.Encoding.DER))

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, cn: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.own = Issued(key, cert)

    def issue(self, cn: str, *, server: bool, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3 if expired else 0)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.own.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return Issued(key, builder.sign(self.own.key, hashes.SHA256()))


class KubeSecretDir:
    """A mounted Secret as kubelet writes it: files are links through `..data`, swapped atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.root / f"..gen_{self.generation}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        tmp = self.root / "..data_tmp"
        os.symlink(target.name, tmp)
        os.replace(tmp, self.root / "..data")  # rename(2): the swap is atomic
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)

    def path(self, name: str) -> Path:
        return self.root / name


def client_context(ca: Ca, cert: Issued | None = None, *, tmp: Path | None = None) -> ssl.SSLContext:
    """A client that trusts `ca` for the server and presents `cert` when asked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.own.cert_pem.decode())
    if cert is not None:
        assert tmp is not None
        cert_path, key_path = cert.write(tmp, f"client-{cert.cert.serial_number}")
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def legacy_client_context(ca: Ca, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks only `version`, old ones included (security level 0 lets OpenSSL offer them)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.own.cert_pem.decode())
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
    return ctx


def legacy_server_context(server: Issued, tmp: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A control server that accepts `version`: shows the legacy client can really speak it here."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
    cert, key = server.write(tmp, "control")
    ctx.load_cert_chain(cert, key)
    return ctx


def with_tls(block: str) -> str:
    """The proxy tests' config with a `server.tls` block (paths relative to the config file)."""
    return BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  tls:\n" + block)


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = Ca("test-ca")
        self.other_ca = Ca("other-ca")
        self.server = self.ca.issue("gateway", server=True)
        self.client = self.ca.issue("client-a", server=False)
        self.client_b = self.ca.issue("client-b", server=False)
        self.stranger = self.other_ca.issue("stranger", server=False)
        self.server.write(root / "tls", "tls")
        (root / "tls" / "ca.crt").write_bytes(self.ca.own.cert_pem)

    def client_ctx(self, cert: Issued | None = None) -> ssl.SSLContext:
        return client_context(self.ca, cert, tmp=self.root / "clients")


def tls_block(client_auth: str = "none", min_version: str = "1.2") -> str:
    ca = "    client_ca_file: tls/ca.crt\n" if client_auth != "none" else ""
    return (
        f"    cert_file: tls/tls.crt\n    key_file: tls/tls.key\n{ca}"
        f"    client_auth: {client_auth}\n    min_version: \"{min_version}\"\n"
    )


def https(process: GatewayProcess, path: str) -> str:
    return f"https://127.0.0.1:{process.proxy_port}{path}"


async def fetch(process: GatewayProcess, ctx: ssl.SSLContext, path: str = "/public/x", **kw: Any) -> tuple[int, Any]:
    """One request on a fresh connection (so a fresh handshake)."""
    return await fetch_port(process.proxy_port, ctx, path, **kw)


async def fetch_port(port: int, ctx: ssl.SSLContext, path: str = "/public/x", **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as http:
        async with http.get(f"https://127.0.0.1:{port}{path}", **kw) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.read()
            return resp.status, body


async def refused(process: GatewayProcess, ctx: ssl.SSLContext) -> bool:
    """True when no HTTP answer comes back: the handshake (or, in TLS 1.3, the first read after it) failed."""
    try:
        await fetch(process, ctx)
    except aiohttp.ClientError:
        return True
    return False
