"""TLS on the proxy port: the server SSLContext built from PEM files, and its renewal when they change.

Renewal without a restart (cert-manager rewrites the mounted Secret): each good
set of files becomes a new SSLContext, and the listening context's SNI callback,
which OpenSSL runs for every ClientHello (with or without a server name), moves
each new handshake onto the newest one. Connections already open keep the
context, certificate and session they were made with. A set that does not load
(unreadable, not PEM, key not matching the certificate, certificate expired) is
refused, logged and counted, and the last good one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Literal, NamedTuple, NoReturn, Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.config.model import TlsConfig
from gateway.jwks_fetch import StatSignature, stat_signature
from gateway.process_log import rfc3339

log = logging.getLogger("gateway.tls")

# Cert-manager and kubelet write the files at any time; SPEC asks for at most 2 s to notice.
POLL_SECONDS = 1.0

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

MAX_PEM_BYTES = 1 << 20
_SERVER_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)

TlsFileField = Literal["cert_file", "key_file", "client_ca_file"]


class TlsFileError(Exception):
    """A TLS file that cannot be used: `field` names the config key, `message` is a safe sentence."""

    def __init__(self, field: TlsFileField, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TlsEvents(Protocol):
    """Where reload outcomes and the serving certificate's expiry are reported (the Metrics object)."""

    def tls_reload(self, result: str) -> None: ...

    def tls_certificate(self, not_after: float) -> None: ...


def _read(path: str, field: TlsFileField) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsFileError(field, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsFileError(field, f"is larger than {MAX_PEM_BYTES} bytes")
    return data


def check_files(cfg: TlsConfig, now: float) -> float:
    """Each file on its own, so an error names the one at fault; returns the leaf's notAfter (Unix time).

    An expired leaf is refused too: serving it would fail every client, while the
    previous certificate may still be good.
    """
    try:
        leaf = x509.load_pem_x509_certificates(_read(cfg.cert_file, "cert_file"))[0]
    except ValueError:
        raise TlsFileError("cert_file", "is not a PEM certificate chain") from None
    not_after = leaf.not_valid_after_utc.timestamp()
    if not_after <= now:
        raise TlsFileError("cert_file", f"the certificate expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    try:
        key = serialization.load_pem_private_key(_read(cfg.key_file, "key_file"), password=None)
    except TypeError:  # cryptography's answer for an encrypted key given no password
        raise TlsFileError("key_file", "the private key is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsFileError("key_file", "is not a PEM private key") from None
    if not isinstance(key, _SERVER_KEY_TYPES):
        raise TlsFileError("key_file", f"a {type(key).__name__} cannot sign a TLS handshake")
    if cfg.client_ca_file is not None:
        try:
            x509.load_pem_x509_certificates(_read(cfg.client_ca_file, "client_ca_file"))
        except ValueError:
            raise TlsFileError("client_ca_file", "is not a PEM bundle of CA certificates") from None
    return not_after


def _no_passphrase() -> NoReturn:
    # Never reached after check_files; without a callback OpenSSL would prompt on the terminal.
    raise TlsFileError("key_file", "the private key is encrypted; give an unencrypted PEM key")


def _ssl_reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reason code ("KEY_VALUES_MISMATCH"), never file contents.
    return str(exc.reason or type(exc).__name__).replace("_", " ").lower()


class ServerContext(NamedTuple):
    context: ssl.SSLContext
    not_after: float  # the certificate's expiry, Unix time


def build_context(cfg: TlsConfig, now: float | None = None) -> ServerContext:
    """A server context from the files `cfg` names; raises TlsFileError naming the file at fault."""
    not_after = check_files(cfg, time.time() if now is None else now)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[cfg.min_version]
    # No renegotiation: a client-triggered CPU cost and a way to change identity mid-connection.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file, password=_no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError("key_file", "the private key does not match the certificate") from None
        raise TlsFileError("cert_file", f"the certificate and key do not load ({_ssl_reason(exc)})") from None
    except OSError as exc:  # replaced between check_files and here
        raise TlsFileError("cert_file", f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if cfg.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        except ssl.SSLError as exc:
            raise TlsFileError("client_ca_file", f"the CA bundle does not load ({_ssl_reason(exc)})") from None
        except OSError as exc:
            raise TlsFileError("client_ca_file", f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    # optional: a client may send no certificate, but one it sends must verify (else no handshake).
    ctx.verify_mode = VERIFY_MODES[cfg.client_auth]
    return ServerContext(ctx, not_after)


def _paths(cfg: TlsConfig) -> tuple[str, ...]:
    return (cfg.cert_file, cfg.key_file) + ((cfg.client_ca_file,) if cfg.client_ca_file else ())


class ServerTls:
    """The proxy port's TLS: a listening context that hands each new handshake the newest good context."""

    def __init__(self, cfg: TlsConfig, events: TlsEvents, alpn: tuple[str, ...] = ()) -> None:
        self._events = events
        self._alpn = alpn  # offered on every context: the one the handshake ends on answers ALPN
        stamps = self._stamps(cfg)
        self.current, not_after = build_context(cfg)
        self._offer_alpn(self.current)  # at start a bad file is fatal (the config check reports it first)
        events.tls_certificate(not_after)
        self._tried = stamps  # the last file state we tried, good or bad: a bad one is reported once
        self._wanted = cfg
        # The context the socket listens with. Per-connection settings OpenSSL copies when it
        # creates the connection (before the callback runs) live here: the minimum version and
        # whether a client certificate is asked for; everything else comes from `current`.
        self.listening = self.current
        self.listening.sni_callback = self._select
        self._watch_task: asyncio.Task[None] | None = None

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        # One certificate for every name (no SNI selection): only the newest context matters.
        if connection.context is not self.current:
            connection.context = self.current

    def _offer_alpn(self, ctx: ssl.SSLContext) -> None:
        if self._alpn:
            ctx.set_alpn_protocols(list(self._alpn))  # RFC 7301; "h2" first when server.http2 is on

    def _stamps(self, cfg: TlsConfig) -> tuple[StatSignature | None, ...]:
        return tuple(stat_signature(path) for path in _paths(cfg))

    def update(self, cfg: TlsConfig) -> bool:
        """A reloaded config's TLS settings: load them now; keep serving the old ones if they fail."""
        if cfg == self._wanted:
            return self.poll()  # the same settings: nothing to do unless a file changed
        self._wanted = cfg
        return self._load(self._stamps(cfg))

    def poll(self) -> bool:
        """Reload when a file changed since the last attempt (stat follows symlinks: a Kubernetes swap shows)."""
        stamps = self._stamps(self._wanted)
        if stamps == self._tried:
            return False
        return self._load(stamps)

    def _load(self, stamps: tuple[StatSignature | None, ...]) -> bool:
        cfg = self._wanted
        try:
            ctx, not_after = build_context(cfg)
        except TlsFileError as exc:
            if self._stamps(cfg) != stamps:
                return False  # the files changed while we read them (a swap half done): try again next poll
            self._tried = stamps
            self._events.tls_reload("error")
            log.error(
                "TLS files refused; the previous certificate keeps serving",
                extra={"key": f"server.tls.{exc.field}", "file": getattr(cfg, exc.field), "error": exc.message},
            )
            return False
        if self._stamps(cfg) != stamps:
            return False  # cert and key may come from two different generations: read again next poll
        self._tried = stamps
        self._offer_alpn(ctx)
        self.listening.minimum_version = ctx.minimum_version
        self.listening.verify_mode = ctx.verify_mode
        self.current = ctx
        self._events.tls_reload("ok")
        self._events.tls_certificate(not_after)
        log.info(
            "TLS certificate loaded; new connections use it, open ones keep theirs",
            extra={"file": cfg.cert_file, "not_after": rfc3339(not_after)},
        )
        return True

    def start_watching(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.poll()
            except Exception:  # a bug of ours must not stop renewals for the life of the process
                log.exception("TLS file check failed")

    def stop_watching(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()


def peer_certificate(transport: Any) -> bytes | None:
    """The DER of the verified client certificate of a TLS connection, or None (plain HTTP, no certificate).

    The server asks for a certificate only with client_auth optional/required, and a
    certificate that does not verify against client_ca_file fails the handshake, so
    any certificate found here is a verified one.
    """
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der
