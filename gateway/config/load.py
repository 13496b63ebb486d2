"""Turn a YAML config file into a validated GatewayConfig, reporting every error at once with its key path and line.

`parse_config` walks the whole document and never stops at the first problem
(oauth2-proxy style): each mistake becomes a ConfigIssue, and if there is any,
ConfigInvalid carries all of them sorted by line. The only I/O besides reading
the config file is what the contract demands be checked at load: secret
environment variables and files, and JWK Set files.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.decryption import parse_decryption
from gateway.config.errors import ConfigInvalid, ConfigIssue
from gateway.config.model import (
    CacheConfig,
    ClaimRule,
    ForwardConfig,
    GatewayConfig,
    IssuerConfig,
    JwksConfig,
    Listen,
    RouteConfig,
    RouteMatch,
    Secret,
    ServerConfig,
    TokenSource,
    UpstreamConfig,
)
from gateway.config.values import (
    DURATION_HELP,
    check_http_url,
    header_reserved,
    is_hostname,
    is_token,
    parse_duration,
    parse_listen,
)
from gateway.config.yaml_lines import MAX_DOCUMENT_BYTES, MarkedMap, MarkedSeq, YamlError, load_yaml

__all__ = ["SUPPORTED_ALGORITHMS", "ConfigInvalid", "ConfigIssue", "load_config", "parse_config"]

SUPPORTED_ALGORITHMS: tuple[str, ...] = (
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA", "Ed25519", "Ed448",
)
# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
HS_MIN_SECRET_BYTES: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}

MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_JWKS_FILE_BYTES = 1 << 20
MAX_HEADER_BYTES_RANGE = (1024, 1 << 20)
WORKERS_RANGE = (1, 64)
MAX_TOKEN_BYTES_RANGE = (256, 1 << 20)
MAX_CACHE_ENTRIES = 10_000_000

_TOP_KEYS = ("server", "upstream", "tokens", "issuers", "forward", "routes", "cache", "decryption")
_SERVER_KEYS = (
    "listen", "admin_listen", "shutdown_grace", "max_header_bytes", "max_token_bytes", "cors_preflight", "workers",
)
_UPSTREAM_KEYS = ("url", "connect_timeout", "timeout")
_TOKEN_KEYS = ("header", "cookie", "query", "prefix")
_ISSUER_KEYS = (
    "name", "issuer", "audiences", "algorithms", "clock_skew", "require_expiration",
    "max_lifetime", "typ", "jwks", "secret", "require_encryption",
)
_JWKS_SOURCES = ("file", "uri", "discovery", "inline")
_JWKS_KEYS = (*_JWKS_SOURCES, "refresh_interval", "min_refresh_interval", "timeout", "allow_http")
_SECRET_KEYS = ("env", "file")
_FORWARD_KEYS = ("claims_to_headers", "payload_header", "keep_authorization")
_ROUTE_KEYS = ("name", "match", "auth", "issuers", "claims")
_MATCH_KEYS = ("prefix", "path", "regex", "methods", "host")
_RULE_OPS = ("contains", "any_of", "equals")
_AUTH_MODES = ("public", "optional", "required")
_CACHE_KEYS = ("max_entries", "ttl")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # path segments that need no quoting
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # names become metric label values
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_UNRESERVED_PCT = re.compile(r"%(?:4[1-9A-Fa-f]|5[0-9Aa]|6[1-9A-Fa-f]|7[0-9Aa]|3[0-9]|2[DdEe]|5[Ff]|7[Ee])")
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

_JWKS_DEFAULTS = JwksConfig(kind="file")


@dataclass(frozen=True, slots=True)
class _At:
    """A value in the document with its key path and line."""

    value: Any
    path: str
    line: int | None


def _child_path(parent: str, key: str) -> str:
    if _IDENT.fullmatch(key) is None:
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a YAML {type(value).__name__} value"


def _suggest(word: str, choices: Iterable[str]) -> str:
    options = list(choices)
    for choice in options:
        if choice.lower() == word.lower():
            return f"; did you mean {choice!r}?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _names(choices: Iterable[str]) -> str:
    return ", ".join(choices)


class _Parser:
    """One validation pass: section methods return typed values and record issues as they go."""

    def __init__(self, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.environ = environ
        self.issues: list[ConfigIssue] = []
        self.require_encryption: list[_At] = []  # checked against the decryption block at the end

    # --- reporting -----------------------------------------------------------------

    def error(self, at: _At, message: str) -> None:
        self.issues.append(ConfigIssue(at.path, at.line, message, self.source))

    def error_at(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(ConfigIssue(path, line, message, self.source))

    # --- structure -----------------------------------------------------------------

    def mapping(self, at: _At, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, _At] | None:
        """The known keys of a mapping as located values; unknown and missing keys are reported."""
        if not isinstance(at.value, MarkedMap):
            self.error(at, f"must be a mapping, got {_kind(at.value)}")
            return None
        node = at.value
        out: dict[str, _At] = {}
        for key, value in node.items():
            path = _child_path(at.path, key)
            if key not in allowed:
                hint = _suggest(key, allowed) or f"; allowed: {_names(allowed)}"
                self.error_at(path, node.key_lines[key], f"unknown key {key!r}{hint}")
                continue
            out[key] = _At(value, path, _value_line(node, key))
        for key in required:
            if key not in node:
                self.error_at(_child_path(at.path, key), at.line, f"missing required key {key!r}")
        return out

    def seq(self, at: _At, *, nonempty: bool = True, what: str = "item") -> list[_At] | None:
        if not isinstance(at.value, MarkedSeq):
            self.error(at, f"must be a list, got {_kind(at.value)}")
            return None
        if nonempty and not at.value:
            self.error(at, f"must list at least one {what}")
            return None
        return [_At(v, f"{at.path}[{i}]", at.value.item_lines[i]) for i, v in enumerate(at.value)]

    def entries(self, at: _At, *, nonempty: bool = True) -> list[tuple[str, int, _At]] | None:
        """A free-form mapping (user-chosen keys): (key, key line, located value)."""
        if not isinstance(at.value, MarkedMap):
            self.error(at, f"must be a mapping, got {_kind(at.value)}")
            return None
        if nonempty and not at.value:
            self.error(at, "must not be empty")
            return None
        node = at.value
        return [(k, node.key_lines[k], _At(v, _child_path(at.path, k), _value_line(node, k))) for k, v in node.items()]

    # --- scalars -------------------------------------------------------------------

    def string(self, at: _At) -> str | None:
        if not isinstance(at.value, str):
            self.error(at, f"must be a string, got {_kind(at.value)}")
            return None
        if not at.value.strip():
            self.error(at, "must not be empty")
            return None
        return at.value

    def boolean(self, at: _At) -> bool | None:
        if not isinstance(at.value, bool):
            self.error(at, f"must be true or false, got {_kind(at.value)}")
            return None
        return at.value

    def integer(self, at: _At, low: int, high: int) -> int | None:
        # bool is an int subclass in Python; `true` is not a size.
        if isinstance(at.value, bool) or not isinstance(at.value, int):
            self.error(at, f"must be an integer, got {_kind(at.value)}")
            return None
        if not low <= at.value <= high:
            self.error(at, f"must be between {low} and {high}, got {at.value}")
            return None
        return at.value

    def duration(self, at: _At, *, allow_zero: bool = False) -> float | None:
        if isinstance(at.value, (int, float)) and not isinstance(at.value, bool):
            self.error(at, f"a bare number has no unit: write e.g. \"{at.value}s\" ({DURATION_HELP})")
            return None
        if not isinstance(at.value, str):
            self.error(at, f"must be {DURATION_HELP}, got {_kind(at.value)}")
            return None
        try:
            seconds = parse_duration(at.value)
        except ValueError as exc:
            self.error(at, str(exc))
            return None
        if seconds == 0 and not allow_zero:
            self.error(at, "must be greater than 0")
            return None
        return seconds

    def choice(self, at: _At, choices: Sequence[str]) -> str | None:
        value = self.string(at)
        if value is None:
            return None
        if value not in choices:
            self.error(at, f"{value!r} is not one of {_names(choices)}{_suggest(value, choices)}")
            return None
        return value

    def listen(self, at: _At) -> Listen | None:
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            self.error(at, f"must be a \"host:port\" string, e.g. \"0.0.0.0:{at.value}\"")
            return None
        text = self.string(at)
        if text is None:
            return None
        try:
            return parse_listen(text)
        except ValueError as exc:
            self.error(at, str(exc))
            return None

    def strings(
        self, at: _At, *, what: str, fold: Callable[[str], str] = lambda s: s, check: Callable[[_At, str], bool] | None = None
    ) -> tuple[str, ...] | None:
        """A non-empty list of non-empty strings without duplicates (compared after `fold`)."""
        items = self.seq(at, what=what)
        if items is None:
            return None
        out: list[str] = []
        seen: dict[str, int | None] = {}
        ok = True
        for item in items:
            value = self.string(item)
            if value is None or (check is not None and not check(item, value)):
                ok = False
                continue
            key = fold(value)
            if key in seen:
                self.error(item, f"{value!r} is listed twice (first on line {seen[key]})")
                ok = False
                continue
            seen[key] = item.line
            out.append(value)
        return tuple(out) if ok else None

    # --- the document ----------------------------------------------------------------

    def report_duplicates(self, value: Any, path: str, seen: set[int]) -> None:
        """Duplicate mapping keys anywhere, reported with the key path and both lines."""
        if id(value) in seen:
            return  # an aliased node: visit once
        if isinstance(value, MarkedMap):
            seen.add(id(value))
            for dup in value.duplicates:
                self.error_at(
                    _child_path(path, dup.key), dup.line, f"duplicate key {dup.key!r} (first on line {dup.first_line})"
                )
            for key, child in value.items():
                self.report_duplicates(child, _child_path(path, key), seen)
        elif isinstance(value, MarkedSeq):
            seen.add(id(value))
            for i, child in enumerate(value):
                self.report_duplicates(child, f"{path}[{i}]", seen)

    def document(self, root: Any) -> GatewayConfig:
        self.report_duplicates(root, "", set())
        if root is None:
            root = MarkedMap(1)  # an empty file: every default
        top = self.mapping(_At(root, "", 1), _TOP_KEYS)
        if top is None:
            return GatewayConfig(source=self.source)
        kw: dict[str, Any] = {"source": self.source}
        if "server" in top:
            kw["server"] = self.server(top["server"])
        if "upstream" in top:
            kw["upstream"] = self.upstream(top["upstream"])
        tokens: tuple[TokenSource, ...] | None = None
        if "tokens" in top:
            tokens = self.tokens(top["tokens"])
            if tokens is not None:
                kw["tokens"] = tokens
        issuer_names: dict[str, int | None] | None = {}
        if "issuers" in top:
            kw["issuers"], issuer_names = self.issuers(top["issuers"])
        if "forward" in top:
            kw["forward"] = self.forward(top["forward"], tokens if tokens is not None else GatewayConfig().tokens)
        if "routes" in top:
            kw["routes"] = self.routes(top["routes"], issuer_names)
        if "cache" in top:
            kw["cache"] = self.cache(top["cache"])
        if "decryption" in top:
            kw["decryption"] = parse_decryption(self, top["decryption"])
        if "decryption" not in top:
            for at in self.require_encryption:
                self.error(at, "needs a top-level decryption block (the gateway's private keys) to decrypt tokens")
        return GatewayConfig(**kw)

    # --- server / upstream / cache -------------------------------------------------------

    def server(self, at: _At) -> ServerConfig:
        m = self.mapping(at, _SERVER_KEYS)
        if m is None:
            return ServerConfig()
        kw: dict[str, Any] = {}
        for key in ("listen", "admin_listen"):
            if key in m and (addr := self.listen(m[key])) is not None:
                kw[key] = addr
        if "listen" in kw and "admin_listen" in kw and _same_socket(kw["listen"], kw["admin_listen"]):
            self.error(m["admin_listen"], f"must not share a port with listen ({kw['listen']})")
        if "shutdown_grace" in m and (grace := self.duration(m["shutdown_grace"], allow_zero=True)) is not None:
            kw["shutdown_grace"] = grace
        if "max_header_bytes" in m:
            if (n := self.integer(m["max_header_bytes"], *MAX_HEADER_BYTES_RANGE)) is not None:
                kw["max_header_bytes"] = n
        if "max_token_bytes" in m:
            if (n := self.integer(m["max_token_bytes"], *MAX_TOKEN_BYTES_RANGE)) is not None:
                header_cap = kw.get("max_header_bytes", ServerConfig().max_header_bytes)
                if n > header_cap:
                    self.error(m["max_token_bytes"], f"{n} exceeds max_header_bytes ({header_cap}): no such token could arrive")
                else:
                    kw["max_token_bytes"] = n
        if "cors_preflight" in m and (mode := self.choice(m["cors_preflight"], ("bypass", "check"))) is not None:
            kw["cors_preflight"] = mode
        if "workers" in m and (workers := self.integer(m["workers"], *WORKERS_RANGE)) is not None:
            kw["workers"] = workers
        return ServerConfig(**kw)

    def upstream(self, at: _At) -> UpstreamConfig:
        m = self.mapping(at, _UPSTREAM_KEYS)
        if m is None:
            return UpstreamConfig()
        kw: dict[str, Any] = {}
        if "url" in m and (url := self.string(m["url"])) is not None:
            try:
                check_http_url(url, allow_http=True, what="upstream url")
            except ValueError as exc:
                self.error(m["url"], str(exc))
            else:
                from urllib.parse import urlsplit

                parts = urlsplit(url)
                if parts.path not in ("", "/") or parts.query:
                    self.error(m["url"], "must be scheme://host[:port] only: requests keep their own path and query")
                else:
                    kw["url"] = url.rstrip("/")
        for key in ("connect_timeout", "timeout"):
            if key in m and (seconds := self.duration(m[key])) is not None:
                kw[key] = seconds
        return UpstreamConfig(**kw)

    def cache(self, at: _At) -> CacheConfig:
        m = self.mapping(at, _CACHE_KEYS)
        if m is None:
            return CacheConfig()
        kw: dict[str, Any] = {}
        # 0 entries turns the verified-token cache off.
        if "max_entries" in m and (n := self.integer(m["max_entries"], 0, MAX_CACHE_ENTRIES)) is not None:
            kw["max_entries"] = n
        if "ttl" in m and (ttl := self.duration(m["ttl"])) is not None:
            kw["ttl"] = ttl
        return CacheConfig(**kw)

    # --- tokens ---------------------------------------------------------------------------

    def tokens(self, at: _At) -> tuple[TokenSource, ...] | None:
        items = self.seq(at, what="token source")
        if items is None:
            return None
        out: list[TokenSource] = []
        seen: dict[tuple[str, str], int | None] = {}
        ok = True
        for item in items:
            m = self.mapping(item, _TOKEN_KEYS)
            if m is None:
                ok = False
                continue
            given = [k for k in ("header", "cookie", "query") if k in m]
            if len(given) != 1:
                found = f" (found {', '.join(given)})" if given else ""
                self.error(m[given[1]] if given else item, f"give exactly one of header, cookie, query{found}")
                ok = False
                continue
            where = given[0]
            name_at = m[where]
            name = self.string(name_at)
            if name is None:
                ok = False
                continue
            if where in ("header", "cookie") and not is_token(name):
                self.error(name_at, f"{name!r} is not a valid {where} name (RFC 9110 token characters)")
                ok = False
                continue
            if where == "query" and _QUERY_NAME.fullmatch(name) is None:
                self.error(name_at, f"{name!r} is not a valid query parameter name (letters, digits, . _ ~ -)")
                ok = False
                continue
            prefix: str | None = None
            if "prefix" in m:
                if where != "header":
                    self.error(m["prefix"], f"prefix applies only to a header source, not to a {where}")
                    ok = False
                    continue
                if not isinstance(m["prefix"].value, str) or not m["prefix"].value:
                    self.error(m["prefix"], f"must be a non-empty string such as \"Bearer \", got {_kind(m['prefix'].value)}")
                    ok = False
                    continue
                prefix = m["prefix"].value
                if not prefix.isascii() or not prefix.isprintable():
                    self.error(m["prefix"], "must be printable ASCII")
                    ok = False
                    continue
            key = (where, name.lower() if where == "header" else name)
            if key in seen:
                self.error(name_at, f"{where} {name!r} is listed twice (first on line {seen[key]})")
                ok = False
                continue
            seen[key] = name_at.line
            out.append(TokenSource(where, name, prefix))
        return tuple(out) if ok else None

    # --- issuers ----------------------------------------------------------------------------

    def issuers(self, at: _At) -> tuple[tuple[IssuerConfig, ...], dict[str, int | None] | None]:
        """The issuers, and every well-formed name (even of issuers with other errors) for route checks.

        The names are None when the section is unusable, so routes do not pile on errors.
        """
        items = self.seq(at, nonempty=False)
        if items is None:
            return (), None
        out: list[IssuerConfig] = []
        names: dict[str, int | None] = {}
        iss_seen: dict[str, int | None] = {}
        for item in items:
            m = self.mapping(item, _ISSUER_KEYS, required=("name", "issuer", "algorithms"))
            if m is None:
                continue
            if "name" in m and (name := self.string(m["name"])) is not None:
                if _LABEL.fullmatch(name) is None:
                    self.error(m["name"], f"{name!r} must be 1-63 letters, digits, '_', '.' or '-' (it is a metric label)")
                elif name in names:
                    self.error(m["name"], f"issuer name {name!r} is used twice (first on line {names[name]})")
                else:
                    names[name] = m["name"].line
            if "issuer" in m and (iss := self.string(m["issuer"])) is not None:
                if iss in iss_seen:
                    self.error(
                        m["issuer"], f"issuer {iss!r} is configured twice (first on line {iss_seen[iss]}): a token's iss must pick one"
                    )
                else:
                    iss_seen[iss] = m["issuer"].line
            issuer = self.issuer(item, m)
            if issuer is not None:
                out.append(issuer)
        return tuple(out), names

    def issuer(self, at: _At, m: dict[str, _At]) -> IssuerConfig | None:
        before = len(self.issues)
        name = m["name"].value if "name" in m else None
        iss = m["issuer"].value if "issuer" in m else None
        algorithms = self.algorithms(m["algorithms"]) if "algorithms" in m else None
        kw: dict[str, Any] = {}
        if "audiences" in m and (auds := self.strings(m["audiences"], what="audience")) is not None:
            kw["audiences"] = auds
        if "clock_skew" in m and (skew := self.duration(m["clock_skew"], allow_zero=True)) is not None:
            kw["clock_skew"] = skew
        if "require_expiration" in m and (req := self.boolean(m["require_expiration"])) is not None:
            kw["require_expiration"] = req
        if "max_lifetime" in m and (life := self.duration(m["max_lifetime"])) is not None:
            kw["max_lifetime"] = life
        if "typ" in m and (typ := self.strings(m["typ"], what="typ value", fold=_fold_typ)) is not None:
            kw["typ"] = typ
        if "require_encryption" in m and (enc := self.boolean(m["require_encryption"])) is not None:
            kw["require_encryption"] = enc
            if enc:
                self.require_encryption.append(m["require_encryption"])
        hs = [a for a in algorithms or () if a in HS_MIN_SECRET_BYTES]
        keyed = [a for a in algorithms or () if a not in HS_MIN_SECRET_BYTES]
        if "jwks" in m:
            if algorithms is not None and not keyed:
                self.error(
                    m["jwks"],
                    f"is never used: {', '.join(hs)} verify with the secret only, never with keys from a JWK Set",
                )
            kw["jwks"] = self.jwks(m["jwks"])
        elif keyed:
            self.error_at(
                _child_path(at.path, "jwks"), at.line,
                f"missing: {', '.join(keyed)} need public keys; add jwks with one of {_names(_JWKS_SOURCES)}",
            )
        if "secret" in m:
            if algorithms is not None and not hs:
                self.error(m["secret"], "is used only by HS256/HS384/HS512, and algorithms lists none of them")
                self.secret(m["secret"], 0)  # still report how it is given
            else:
                kw["secret"] = self.secret(m["secret"], max((HS_MIN_SECRET_BYTES[a] for a in hs), default=0))
        elif hs:
            self.error_at(
                _child_path(at.path, "secret"), at.line,
                f"missing: {', '.join(hs)} need a shared secret: secret: {{env: VAR}} or {{file: PATH}}",
            )
        if len(self.issues) != before or not isinstance(name, str) or not isinstance(iss, str) or algorithms is None:
            return None
        return IssuerConfig(name=name, issuer=iss, algorithms=algorithms, **kw)

    def algorithms(self, at: _At) -> tuple[str, ...] | None:
        def check(item: _At, alg: str) -> bool:
            if alg.lower() == "none":
                self.error(
                    item,
                    "'none' is never allowed: an unsigned token proves nothing "
                    "(RFC 8725 §3.1, §2.1); list only signature algorithms",
                )
                return False
            if alg not in SUPPORTED_ALGORITHMS:
                hint = _suggest(alg, SUPPORTED_ALGORITHMS)
                self.error(item, f"unknown algorithm {alg!r}{hint} (supported: {_names(SUPPORTED_ALGORITHMS)})")
                return False
            return True

        return self.strings(at, what="algorithm", check=check)

    def jwks(self, at: _At) -> JwksConfig | None:
        m = self.mapping(at, _JWKS_KEYS)
        if m is None:
            return None
        before = len(self.issues)
        sources = [k for k in _JWKS_SOURCES if k in m]
        if len(sources) != 1:
            if not sources:
                self.error(at, f"give exactly one key source: {_names(_JWKS_SOURCES)}")
            else:
                self.error(m[sources[1]], f"give exactly one key source, found {', '.join(sources)}")
            return None
        kind = sources[0]
        allow_http = False
        if "allow_http" in m:
            allow_http = bool(self.boolean(m["allow_http"]))
        kw: dict[str, Any] = {"allow_http": allow_http}
        for key in ("refresh_interval", "min_refresh_interval", "timeout"):
            if key in m and (seconds := self.duration(m[key])) is not None:
                kw[key] = seconds
        refresh = kw.get("refresh_interval", _JWKS_DEFAULTS.refresh_interval)
        min_refresh = kw.get("min_refresh_interval", _JWKS_DEFAULTS.min_refresh_interval)
        if "refresh_interval" in m or "min_refresh_interval" in m:
            if isinstance(refresh, float) and isinstance(min_refresh, float) and min_refresh > refresh:
                where = m["min_refresh_interval"] if "min_refresh_interval" in m else m["refresh_interval"]
                self.error(where, f"min_refresh_interval ({min_refresh:g}s) exceeds refresh_interval ({refresh:g}s)")
        src = m[kind]
        if kind in ("uri", "discovery"):
            url = self.string(src)
            if url is not None:
                try:
                    check_http_url(url, allow_http=allow_http, what=f"jwks {kind}")
                except ValueError as exc:
                    self.error(src, str(exc))
                kw["location"] = url
        elif kind == "file":
            kw["location"] = self.jwks_file(src)
        else:
            kw["inline"] = self.jwks_inline(src)
        if len(self.issues) != before:
            return None
        return JwksConfig(kind=kind, **kw)  # type: ignore[arg-type]

    def jwks_file(self, at: _At) -> str | None:
        name = self.string(at)
        if name is None:
            return None
        path = self.resolve(name)
        data = self.read_file(at, path, what="JWK Set file", limit=MAX_JWKS_FILE_BYTES)
        if data is None:
            return None
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self.error(at, f"{path} is not JSON: {getattr(exc, 'msg', 'undecodable')}")
            return None
        for where, problem in _jwk_set_problems(document, allow_empty=True):
            self.error(at, f"{path}{where}: {problem}")
        return str(path)

    def jwks_inline(self, at: _At) -> dict[str, Any] | None:
        document = self.plain(at)
        if document is None:
            return None
        problems = _jwk_set_problems(document, allow_empty=False)
        for where, problem in problems:
            self.error_at(f"{at.path}{where}", at.line, problem)
        return document if not problems and isinstance(document, dict) else None

    def plain(self, at: _At) -> Any:
        """The JSON-compatible copy of a YAML value (dict/list/str/int/float/bool/None)."""
        ok = True

        def convert(value: Any, path: str, line: int | None) -> Any:
            nonlocal ok
            if isinstance(value, MarkedMap):
                return {k: convert(v, _child_path(path, k), value.value_lines[k]) for k, v in value.items()}
            if isinstance(value, MarkedSeq):
                return [convert(v, f"{path}[{i}]", value.item_lines[i]) for i, v in enumerate(value)]
            if isinstance(value, float) and not math.isfinite(value):
                ok = False
                self.error_at(path, line, "must be a finite number")
            elif value is not None and not isinstance(value, (str, int, float, bool)):
                ok = False
                self.error_at(path, line, f"{_kind(value)} is not JSON: quote it")
            return value

        result = convert(at.value, at.path, at.line)
        return result if ok else None

    def secret(self, at: _At, min_bytes: int) -> Secret | None:
        # Never quote a value in this section: it may be the secret itself, wrongly put inline.
        if not isinstance(at.value, MarkedMap):
            self.error(at, "secrets are never inline: use {env: VAR} or {file: PATH}")
            return None
        m = self.mapping(at, _SECRET_KEYS)
        if m is None:
            return None
        given = [k for k in _SECRET_KEYS if k in m]
        if len(given) != 1:
            self.error(m[given[1]] if given else at, "give exactly one of env, file")
            return None
        src = m[given[0]]
        if not isinstance(src.value, str) or not src.value:
            self.error(src, f"must be a non-empty string, got {_kind(src.value)}")
            return None
        raw: bytes | None
        if given[0] == "env":
            if _ENV_NAME.fullmatch(src.value) is None:
                self.error(src, "is not an environment variable name (letters, digits, '_'; not starting with a digit)")
                return None
            text = self.environ.get(src.value)
            if text is None:
                self.error(src, f"environment variable {src.value} is not set")
                return None
            if not text:
                self.error(src, f"environment variable {src.value} is empty")
                return None
            raw = text.encode("utf-8", "surrogateescape")
        else:
            path = self.resolve(src.value)
            raw = self.read_file(src, path, what="secret file", limit=MAX_SECRET_FILE_BYTES)
            if raw is None:
                return None
            if raw.endswith(b"\n"):
                raw = raw[:-1]  # editors add one; SPEC: "a file's one trailing newline dropped"
            if not raw:
                self.error(src, f"secret file {path} is empty")
                return None
        if len(raw) < min_bytes:
            self.error(
                src,
                f"secret is shorter than {min_bytes} bytes, the minimum for the configured HS algorithm "
                "(RFC 7518 §3.2: at least the hash size)",
            )
            return None
        return Secret(raw)

    def resolve(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.base_dir / path

    def read_file(self, at: _At, path: Path, *, what: str, limit: int) -> bytes | None:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                # A FIFO or device would block or never end: only regular files (symlinks followed).
                self.error(at, f"{what} {path} is not a regular file")
                return None
            if info.st_size > limit:
                self.error(at, f"{what} {path} is larger than {limit} bytes")
                return None
            with path.open("rb") as f:
                return f.read(limit + 1)[:limit]
        except FileNotFoundError:
            self.error(at, f"{what} {path} does not exist")
        except OSError as exc:
            self.error(at, f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}")
        return None

    # --- forward ---------------------------------------------------------------------------

    def forward(self, at: _At, tokens: Sequence[TokenSource]) -> ForwardConfig:
        m = self.mapping(at, _FORWARD_KEYS)
        if m is None:
            return ForwardConfig()
        kw: dict[str, Any] = {}
        token_headers = {t.name.lower(): t.name for t in tokens if t.location == "header"}
        used: dict[str, int | None] = {}

        def header(item: _At) -> str | None:
            name = self.string(item)
            if name is None:
                return None
            if not is_token(name):
                self.error(item, f"{name!r} is not a valid header name (RFC 9110 token characters)")
                return None
            low = name.lower()
            if header_reserved(name):
                self.error(item, f"{name} is reserved (hop-by-hop, framing, credentials or set by the gateway)")
                return None
            if low in token_headers:
                self.error(item, f"{name} is where tokens are read (tokens): it is stripped from every request")
                return None
            if low in used:
                self.error(item, f"header {name} is already used on line {used[low]} (names compare case-insensitively)")
                return None
            used[low] = item.line
            return name

        if "claims_to_headers" in m:
            pairs: list[tuple[str, str]] = []
            entries = self.entries(m["claims_to_headers"], nonempty=False)
            for claim, _key_line, item in entries or ():
                if not _claim_path_ok(claim):
                    self.error(item, f"claim path {claim!r} has an empty segment")
                    continue
                if (name := header(item)) is not None:
                    pairs.append((claim, name))
            kw["claims_to_headers"] = tuple(pairs)
        if "payload_header" in m and (name := header(m["payload_header"])) is not None:
            kw["payload_header"] = name
        if "keep_authorization" in m and (keep := self.boolean(m["keep_authorization"])) is not None:
            kw["keep_authorization"] = keep
        return ForwardConfig(**kw)

    # --- routes ----------------------------------------------------------------------------

    def routes(self, at: _At, issuer_names: dict[str, int | None] | None) -> tuple[RouteConfig, ...]:
        items = self.seq(at, nonempty=False)
        if items is None:
            return ()
        out: list[RouteConfig] = []
        names: dict[str, int | None] = {}
        for item in items:
            m = self.mapping(item, _ROUTE_KEYS, required=("name", "match"))
            if m is None:
                continue
            before = len(self.issues)
            name = self.string(m["name"]) if "name" in m else None
            if name is not None:
                if _LABEL.fullmatch(name) is None:
                    self.error(m["name"], f"{name!r} must be 1-63 letters, digits, '_', '.' or '-' (it is a metric label)")
                elif name in names:
                    self.error(m["name"], f"route name {name!r} is used twice (first on line {names[name]})")
                else:
                    names[name] = m["name"].line
            match = self.match(m["match"]) if "match" in m else None
            auth = self.choice(m["auth"], _AUTH_MODES) if "auth" in m else "required"
            kw: dict[str, Any] = {}
            if "issuers" in m:
                if auth == "public":
                    self.error(m["issuers"], "a public route checks no token: remove issuers, or use auth: optional/required")
                else:
                    kw["issuers"] = self.route_issuers(m["issuers"], issuer_names)
            elif auth in ("optional", "required") and issuer_names is not None and not issuer_names:
                where = m["auth"] if "auth" in m else item
                self.error_at(
                    _child_path(item.path, "auth"), where.line,
                    f"auth: {auth} needs an issuer, and none is configured (use auth: public, or add issuers)",
                )
            if "claims" in m:
                if auth == "public":
                    self.error(
                        m["claims"], "claim rules never run on a public route (it checks no token): use auth: required"
                    )
                else:
                    kw["claims"] = self.claims(m["claims"])
            if len(self.issues) == before and name is not None and match is not None and auth is not None:
                out.append(RouteConfig(name=name, match=match, auth=auth, **kw))  # type: ignore[arg-type]
        return tuple(out)

    def route_issuers(self, at: _At, known: dict[str, int | None] | None) -> tuple[str, ...] | None:
        def check(item: _At, name: str) -> bool:
            if known is not None and name not in known:
                configured = _names(known) if known else "none"
                self.error(item, f"unknown issuer {name!r}{_suggest(name, known)} (configured: {configured})")
                return False
            return True

        return self.strings(at, what="issuer name", check=check)

    def match(self, at: _At) -> RouteMatch | None:
        m = self.mapping(at, _MATCH_KEYS)
        if m is None:
            return None
        before = len(self.issues)
        kw: dict[str, Any] = {}
        kinds = [k for k in ("prefix", "path", "regex") if k in m]
        if len(kinds) > 1:
            self.error(m[kinds[1]], f"give at most one of prefix, path, regex (found {', '.join(kinds)})")
        for key in ("prefix", "path"):
            if key in m and (p := self.string(m[key])) is not None:
                problem = _path_problem(p)
                if problem:
                    self.error(m[key], problem)
                else:
                    kw[key] = p
        if "regex" in m and (rx := self.string(m["regex"])) is not None:
            try:
                re.compile(rx)
            except re.error as exc:
                self.error(m["regex"], f"regular expression does not compile: {exc}")
            else:
                kw["regex"] = rx
        if "methods" in m:

            def method_ok(item: _At, method: str) -> bool:
                if not is_token(method):
                    self.error(item, f"{method!r} is not an HTTP method name (RFC 9110 token)")
                    return False
                return True

            methods = self.strings(m["methods"], what="method", fold=str.upper, check=method_ok)
            if methods is not None:
                kw["methods"] = tuple(x.upper() for x in methods)
        if "host" in m and (host := self.string(m["host"])) is not None:
            bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if ":" in host and not host.startswith("["):
                self.error(m["host"], f"{host!r}: give the host without a port (hosts are compared without it)")
            elif not (is_hostname(bare) or _is_ipv6(bare)):
                self.error(m["host"], f"{host!r} is not a host name")
            else:
                kw["host"] = bare.lower().rstrip(".")
        if len(self.issues) != before:
            return None
        return RouteMatch(**kw)

    def claims(self, at: _At) -> tuple[ClaimRule, ...]:
        rules: list[ClaimRule] = []
        for claim, _line, item in self.entries(at) or ():
            if not _claim_path_ok(claim):
                self.error(item, f"claim path {claim!r} has an empty segment")
                continue
            m = self.mapping(item, _RULE_OPS)
            if m is None:
                continue
            if len(m) > 1:
                self.error(item, f"give exactly one rule, found {', '.join(m)}")
                continue
            if not m:
                if not item.value:  # otherwise its unknown keys are already reported
                    self.error(item, f"give one rule: {_names(_RULE_OPS)}")
                continue
            op, value_at = next(iter(m.items()))
            if op == "any_of":
                items = self.seq(value_at, what="value")
                if items is None:
                    continue
                values = [v.value for v in items]
                bad = [v for v in items if not _is_scalar(v.value)]
                for v in bad:
                    self.error(v, f"must be a string, number or boolean, got {_kind(v.value)}")
                if not bad:
                    rules.append(ClaimRule(claim, "any_of", tuple(values)))
            elif not _is_scalar(value_at.value):
                self.error(value_at, f"must be a string, number or boolean, got {_kind(value_at.value)}")
            else:
                rules.append(ClaimRule(claim, op, value_at.value))  # type: ignore[arg-type]
        return tuple(rules)


def _value_line(node: MarkedMap, key: str) -> int:
    """Where a value is: its own line for a scalar, the key's line for a block collection
    (which starts on the next line), so that an error about the whole section names its key."""
    if isinstance(node[key], (MarkedMap, MarkedSeq)):
        return node.key_lines[key]
    return node.value_lines[key]


def _fold_typ(value: str) -> str:
    low = value.lower()
    return low[len("application/") :] if low.startswith("application/") else low


def _same_socket(a: Listen, b: Listen) -> bool:
    wildcard = ("0.0.0.0", "::")
    return a.port == b.port != 0 and (a.host == b.host or a.host in wildcard or b.host in wildcard)


def _is_ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def _claim_path_ok(path: str) -> bool:
    return bool(path) and all(path.split("."))


def _path_problem(path: str) -> str | None:
    """Why a route path can never equal a normalized request path, or None."""
    if not path.startswith("/"):
        return f"{path!r} must start with '/'"
    if not path.isprintable() or " " in path:
        return f"{path!r} holds whitespace or control characters"
    if "?" in path or "#" in path:
        return f"{path!r}: routes match the path only, without ?query or #fragment"
    segments = path.split("/")[1:]
    if "//" in path or any(s in (".", "..") for s in segments):
        return f"{path!r} is not normalized: request paths are matched with '.', '..' and '//' removed"
    if _UNRESERVED_PCT.search(path):
        return f"{path!r} percent-encodes an unreserved character: request paths are matched with those decoded"
    # A trailing '/' on a prefix is meaningful (routing: "/api/" matches "/api/x", not "/api").
    return None


def _jwk_set_problems(document: Any, *, allow_empty: bool) -> list[tuple[str, str]]:
    """Structural problems of a JWK Set (RFC 7517 §5): (path suffix, message)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return [("", "must be a JWK Set: an object {keys: [...]}")]
    keys: list[Any] = document["keys"]
    if not keys and not allow_empty:
        return [(".keys", "must hold at least one key")]
    problems: list[tuple[str, str]] = []
    for i, jwk in enumerate(keys):
        where = f".keys[{i}]"
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            problems.append((where, "must be a JWK object with a string kty"))
            continue
        private = [p for p in _PRIVATE_JWK_MEMBERS if p in jwk]
        if private and jwk["kty"] != "oct":
            # A verifier needs public keys only; a private key here is a leak waiting to happen.
            problems.append((where, f"holds private key members ({', '.join(private)}): publish public keys only"))
    return problems


def parse_config(text: str, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> GatewayConfig:
    """Validate a config document; raise ConfigInvalid listing every problem, sorted by line."""
    parser = _Parser(source=source, base_dir=base_dir, environ=environ)
    try:
        root = load_yaml(text)
    except YamlError as exc:
        raise ConfigInvalid([ConfigIssue("", exc.problem.line, exc.problem.message, source)]) from None
    config = parser.document(root)
    if parser.issues:
        raise ConfigInvalid(parser.issues)
    return config


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at `path` (relative file paths inside resolve against its directory)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigInvalid([ConfigIssue("", None, f"cannot read config file: {exc.strerror or type(exc).__name__}", source)]) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigInvalid([ConfigIssue("", None, f"config file larger than {MAX_DOCUMENT_BYTES} bytes", source)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid([ConfigIssue("", None, f"config file is not UTF-8 (byte {exc.start})", source)]) from None
    base_dir = Path(os.path.abspath(source)).parent
    return parse_config(text, source=source, base_dir=base_dir, environ=os.environ if environ is None else environ)
