"""Certificate-bound access tokens (RFC 8705 §3): a token whose `cnf` names a certificate passes only over that certificate.

The certificate is the one the client proved it holds: the verified client
certificate of this TLS connection, or, only when configured with the peers
allowed to send it, the `Hash=` of a front proxy's `x-forwarded-client-cert`
(Envoy's XFCC), for a gateway behind a proxy that terminates mutual TLS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.model import ForwardedClientCertConfig
from gateway.jose.errors import Reason, TokenError
from gateway.jose.trace import BINDING, Trace
from gateway.peers import TrustedPeers
from gateway.tls import peer_certificate

X5T_S256 = "x5t#S256"  # RFC 8705 §3.1 confirmation method
MAX_XFCC_BYTES = 16384


class HeaderValues(Protocol):
    """Every value of a request header (aiohttp's CIMultiDictProxy)."""

    def getall(self, key: str, default: list[str], /) -> list[str]: ...


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: base64url, without padding, of the SHA-256 of the certificate's DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def check_certificate_binding(
    claims: Mapping[str, Any], presented: Callable[[], str | None], trace: Trace | None = None
) -> None:
    """Refuse a certificate-bound token unless `presented()` is the thumbprint it names.

    Runs on every request, cached token or not: the binding is to the connection,
    not to the token. `presented` is asked only for a bound token. A `trace`
    (gateway explain) records the check.
    """
    cnf = claims.get("cnf")
    if cnf is None or (isinstance(cnf, dict) and X5T_S256 not in cnf):
        if trace is not None:
            trace.add(BINDING, f"cnf {X5T_S256}", None, "absent: the token is not bound to a client certificate")
        return
    problem = None
    if not isinstance(cnf, dict):
        # RFC 7800 §3.1: cnf is an object; anything else binds to something we cannot check.
        problem = "the token's cnf claim is not an object"
    elif not isinstance(cnf[X5T_S256], str):
        problem = "the token's certificate thumbprint is not a string"
    if problem is not None:
        if trace is not None:
            trace.add(BINDING, f"cnf {X5T_S256}", False, problem)
        raise TokenError(Reason.MALFORMED, problem)
    expected: str = cnf[X5T_S256]
    thumbprint = presented()
    # Exact comparison of the base64url text (RFC 8705 §3.1); constant time for good measure.
    holds = thumbprint is not None and hmac.compare_digest(thumbprint.encode(), expected.encode("utf-8", "surrogatepass"))
    if trace is not None:
        seen = "no verified client certificate" if thumbprint is None else f"the client certificate's is {thumbprint}"
        trace.add(BINDING, f"cnf {X5T_S256}", holds, f"the token names {expected}; {seen}")
    if not holds:
        raise TokenError(Reason.CERT_BINDING_MISMATCH, "the token is bound to a client certificate this connection did not present")


def pem_thumbprint(path: str) -> str:
    """The thumbprint of the first certificate in a PEM file (gateway explain --client-cert); ValueError if none."""
    with open(path, "rb") as fh:
        pem = fh.read(1 << 20)
    certificate = x509.load_pem_x509_certificates(pem)[0]
    return certificate_thumbprint(certificate.public_bytes(serialization.Encoding.DER))


class ClientCertificates:
    """Where a request's client certificate comes from: its own TLS connection, or a trusted front proxy."""

    def __init__(self, forwarded: ForwardedClientCertConfig | None) -> None:
        self._forwarded = forwarded
        self._trusted = TrustedPeers(forwarded.trusted_peers if forwarded else ())

    def thumbprint(self, transport: Any, remote: str | None, headers: HeaderValues) -> str | None:
        """The thumbprint of the certificate the client proved it holds, or None."""
        forwarded = self._forwarded
        if forwarded is not None and remote in self._trusted:
            # The peer is the proxy that terminated the client's TLS: its own certificate (if
            # it connects over mutual TLS) identifies the proxy, not the client.
            return forwarded_thumbprint(headers.getall(forwarded.header, []))
        der = peer_certificate(transport)
        return None if der is None else certificate_thumbprint(der)



def forwarded_thumbprint(values: list[str]) -> str | None:
    """The client certificate's thumbprint from an XFCC header, or None when it names no single one.

    Envoy's format: elements separated by ',', each `Key=value` pairs separated by ';',
    values with ',', ';' or '=' double-quoted. `Hash` is the hex SHA-256 of the DER. One
    header with one element holding one Hash is required (Envoy's SANITIZE_SET): with
    more, which hop's certificate is meant would be a guess.
    """
    if len(values) != 1 or len(values[0]) > MAX_XFCC_BYTES:
        return None
    elements = _split_unquoted(values[0], ",")
    if elements is None or len(elements) != 1:
        return None
    pairs = _split_unquoted(elements[0], ";")
    if pairs is None:
        return None
    hashes = [value for key, _, value in (p.partition("=") for p in pairs) if key.strip().lower() == "hash"]
    if len(hashes) != 1:
        return None
    text = hashes[0].strip()
    if len(text) != 64:
        return None
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        return None
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _split_unquoted(text: str, separator: str) -> list[str] | None:
    """`text` split at `separator` outside double quotes (backslash escapes inside); None if a quote is open."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted or escaped:
        return None
    parts.append(text[start:])
    return parts
