"""The `server.tls` and `server.forwarded_client_cert` keys: TLS on the proxy port and where client certificates come from."""

from __future__ import annotations

from typing import Any

from gateway.config.model import ForwardedClientCertConfig, TlsConfig
from gateway.config.reader import At, Block, Reader, section
from gateway.config.values import is_token
from gateway.tls import TlsFileError, build_context

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth", "min_version")
_CLIENT_AUTH = ("none", "optional", "required")
_VERSIONS = ("1.2", "1.3")
_XFCC_KEYS = ("trusted_peers", "header")


def parse_tls(r: Reader, at: At) -> TlsConfig | None:
    """TLS on the proxy port; the files are loaded now, so a set that cannot serve is an error here."""
    m = r.mapping(at, _TLS_KEYS, required=("cert_file", "key_file"))
    if m is None:
        return None
    before = len(r.issues)
    paths: dict[str, str] = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        if key in m and (name := r.string(m[key])) is not None:
            paths[key] = str(r.resolve(name))
    client_auth = r.choice(m["client_auth"], _CLIENT_AUTH) if "client_auth" in m else "none"
    min_version: str | None = "1.2"
    if "min_version" in m:
        given = m["min_version"]
        # An unquoted 1.2 is a YAML number; it means the same thing.
        value = str(given.value) if isinstance(given.value, float) else given.value
        min_version = r.choice(At(value, given.path, given.line), _VERSIONS)
    if client_auth not in (None, "none") and "client_ca_file" not in m:
        r.error(m["client_auth"], f"client_auth {client_auth} needs client_ca_file: the CAs that issue client certificates")
    if client_auth == "none" and "client_ca_file" in m:
        r.error(m["client_ca_file"], "is set but client_auth is none, so no client certificate is asked for: set client_auth optional or required")
    if "cert_file" not in paths or "key_file" not in paths:
        return None
    # The files are checked whatever else is wrong, so one `gateway check` reports it all.
    files = TlsConfig(paths["cert_file"], paths["key_file"], paths.get("client_ca_file"))
    try:
        build_context(files)
    except TlsFileError as exc:
        r.error(m[exc.field], f"{getattr(files, exc.field)}: {exc.message}")
        return None
    if len(r.issues) > before:
        return None
    return TlsConfig(
        files.cert_file, files.key_file, files.client_ca_file,
        client_auth=client_auth, min_version=min_version,  # type: ignore[arg-type]  # checked by choice()
    )


def parse_forwarded_client_cert(r: Reader, at: At) -> ForwardedClientCertConfig | None:
    """A front proxy's client-certificate header, believed only from the peers listed (never by default)."""
    m = r.mapping(at, _XFCC_KEYS, required=("trusted_peers",))
    if m is None or "trusted_peers" not in m:
        return None
    networks = r.networks(m["trusted_peers"])
    kw: dict[str, Any] = {}
    if "header" in m and (header := r.string(m["header"])) is not None:
        if not is_token(header):
            r.error(m["header"], f"{header!r} is not a valid header name (RFC 9110 token characters)")
        kw["header"] = header
    if not networks:
        return None
    return ForwardedClientCertConfig(trusted_peers=networks, **kw)


TLS_BLOCKS: tuple[Block, ...] = (
    section("tls", parse_tls),
    section("forwarded_client_cert", parse_forwarded_client_cert),
)
