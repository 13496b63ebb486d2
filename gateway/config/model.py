"""The validated configuration: frozen, typed values that parsing produces and nothing mutates.

Every duration is in seconds (float). Every field here is already checked: code
that receives a GatewayConfig never re-validates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AuthMode = Literal["public", "optional", "required"]
AuthzDialect = Literal["auto", "traefik", "nginx", "envoy"]
TokenLocation = Literal["header", "cookie", "query"]
JwksSourceKind = Literal["file", "uri", "discovery", "inline"]
RuleOp = Literal["contains", "any_of", "equals"]
TlsClientAuth = Literal["none", "optional", "required"]
TlsMinVersion = Literal["1.2", "1.3"]


class Secret:
    """Raw secret bytes that never show up in a repr, a log line, an error or the admin /config view.

    The marker for secret-bearing config values: a new block that holds key material or a
    password stores it as a Secret (or a subclass), and every view of the config redacts it.
    (The views redact any value that is not plain data, too: see config/redact.py.)
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        # IPv6 literals are kept bare for bind(); bracket them when printed (RFC 3986 §3.2.2).
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on the proxy port. Paths are absolute (relative ones resolved against the config file)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # required unless client_auth is "none"
    client_auth: TlsClientAuth = "none"
    min_version: TlsMinVersion = "1.2"


@dataclass(frozen=True, slots=True)
class ForwardedClientCertConfig:
    """A front proxy's client-certificate header (Envoy's XFCC), believed only from `trusted_peers`."""

    trusted_peers: tuple[str, ...]  # IP networks in canonical form ("10.0.0.0/8", "::1/128")
    header: str = "x-forwarded-client-cert"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: Listen = Listen("0.0.0.0", 8080)
    admin_listen: Listen = Listen("127.0.0.1", 9901)
    shutdown_grace: float = 15.0
    max_header_bytes: int = 16384
    max_token_bytes: int = 8192
    cors_preflight: Literal["bypass", "check"] = "bypass"
    # Extension: processes sharing the ports (SO_REUSEPORT), each with its own event
    # loop and key fetcher; metrics are summed across them. Read at start only.
    workers: int = 1
    # The process log's level (debug, info, warning, error); debug adds, per refused token, the failed check.
    log_level: str = "info"
    tls: TlsConfig | None = None  # None: plain HTTP on the proxy port
    forwarded_client_cert: ForwardedClientCertConfig | None = None  # None: such headers are never believed
    # DPoP htu (RFC 9449): the origin clients sign ("https://api.example.com", no path), and the
    # peers whose X-Forwarded-Proto/-Host are believed when it is not set.
    public_origin: tuple[str, str] | None = None  # (scheme, authority), lower-case, default port dropped
    trusted_proxies: tuple[str, ...] = ()  # CIDRs, validated
    # Decision mode: a listener answering other proxies' "may this pass?" checks (None: off).
    authz_listen: Listen | None = None
    authz_dialect: AuthzDialect = "auto"
    authz_path_prefix: str = ""  # envoy dialect: stripped from the check path ("" strips nothing)
    # Connection hygiene on the proxy port (gateway/edge.py).
    header_timeout: float = 10.0  # a started request head must be complete by then: 408 and close
    idle_timeout: float = 60.0  # a connection waiting that long with nothing of a next request is closed
    send_timeout: float = 60.0  # a response write the client takes nothing of for that long: cut (nginx send_timeout)
    body_timeout: float = 60.0  # no request body bytes for that long while they are awaited: 408 (nginx client_body_timeout)
    max_connections: int = 10000  # beyond it a new connection is closed at once
    max_inflight: int = 0  # >0: beyond it a request gets 503 + Retry-After at once; 0 = no limit
    http2: bool = False  # accept HTTP/2: h2c with prior knowledge on plain TCP, ALPN h2 under TLS


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = "http://127.0.0.1:8000"
    connect_timeout: float = 2.0
    timeout: float = 30.0
    protocol: Literal["http1", "h2c"] = "http1"  # h2c: HTTP/2 without TLS (gRPC services need it)


@dataclass(frozen=True, slots=True)
class TokenSource:
    """One place a token may be: header (with an optional case-insensitive prefix), cookie or query."""

    location: TokenLocation
    name: str
    prefix: str | None = None


DEFAULT_TOKEN_SOURCES: tuple[TokenSource, ...] = (
    TokenSource("header", "Authorization", "Bearer "),
)


@dataclass(frozen=True, slots=True)
class JwksConfig:
    """Exactly one source: `location` is the absolute file path, the uri or the
    discovery url; `inline` holds the JWK Set object for kind == "inline"."""

    kind: JwksSourceKind
    location: str | None = None
    inline: Mapping[str, Any] | None = None
    refresh_interval: float = 600.0
    min_refresh_interval: float = 30.0
    timeout: float = 5.0
    allow_http: bool = False


DpopMode = Literal["off", "optional", "required"]


@dataclass(frozen=True, slots=True)
class DpopConfig:
    """An issuer's DPoP rules (RFC 9449): off, optional (bound tokens need a proof), or required."""

    mode: DpopMode = "off"
    algorithms: tuple[str, ...] = ("ES256", "EdDSA", "RS256", "PS256")
    max_age: float = 60.0  # how old a proof's iat may be, plus clock_skew
    nonce: bool = False  # demand a server nonce (RFC 9449 §8/§9)


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    name: str
    issuer: str
    algorithms: tuple[str, ...]
    audiences: tuple[str, ...] | None = None  # None: any audience
    clock_skew: float = 30.0
    require_expiration: bool = True
    max_lifetime: float | None = None
    # Allowed `typ` header values (RFC 8725 §3.11), compared case-insensitively
    # with any "application/" prefix removed; a token without typ is accepted.
    typ: tuple[str, ...] = ("JWT", "at+jwt")
    jwks: JwksConfig | None = None  # None only when every algorithm is HS*
    secret: Secret | None = None  # resolved bytes for HS*; never inline in YAML
    require_encryption: bool = False  # a plain JWS from this issuer gets 401 (needs `decryption`)
    dpop: DpopConfig = field(default_factory=DpopConfig)


@dataclass(frozen=True, slots=True)
class DecryptionConfig:
    """The gateway's own JWE private keys and the allow-lists they are used under (SPEC Part 2)."""

    kind: Literal["file", "env"]
    location: str  # an absolute file path, or an environment variable's name
    algorithms: tuple[str, ...]  # key management (`alg`)
    encryption: tuple[str, ...]  # content encryption (`enc`)


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    # (dotted claim path, header name), in file order.
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    payload_header: str | None = None
    keep_authorization: bool = True


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """At most one of prefix / path / regex; none of them matches every path."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None  # validated to compile
    methods: tuple[str, ...] | None = None  # upper-case
    host: str | None = None  # lower-case, compared without the port


@dataclass(frozen=True, slots=True)
class ClaimRule:
    claim: str  # dotted path
    op: RuleOp
    value: Any  # contains/equals: a scalar; any_of: a tuple of scalars


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    match: RouteMatch
    auth: AuthMode = "required"
    issuers: tuple[str, ...] | None = None  # None: all issuers
    claims: tuple[ClaimRule, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Verified-token cache (extension to SPEC): entries bound and max age."""

    max_entries: int = 10000
    ttl: float = 300.0


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    tokens: tuple[TokenSource, ...] = DEFAULT_TOKEN_SOURCES
    issuers: tuple[IssuerConfig, ...] = ()
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    routes: tuple[RouteConfig, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    decryption: DecryptionConfig | None = None  # absent: every JWE is refused
    source: str | None = None  # the file it was read from, for messages
    sha256: str | None = None  # hex digest of the file's bytes, set by load_config
