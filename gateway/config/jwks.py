"""An issuer's `jwks` block: exactly one key source (file, uri, discovery, inline) and its refresh timing."""

from __future__ import annotations

import json
from typing import Any

from gateway.config.model import JwksConfig
from gateway.config.reader import At, Reader, names
from gateway.config.values import check_http_url

MAX_JWKS_FILE_BYTES = 1 << 20
JWKS_SOURCES = ("file", "uri", "discovery", "inline")
_JWKS_KEYS = (*JWKS_SOURCES, "refresh_interval", "min_refresh_interval", "timeout", "allow_http")
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
_JWKS_DEFAULTS = JwksConfig(kind="file")


def parse_jwks(r: Reader, at: At) -> JwksConfig | None:
    m = r.mapping(at, _JWKS_KEYS)
    if m is None:
        return None
    before = len(r.issues)
    sources = [k for k in JWKS_SOURCES if k in m]
    if len(sources) != 1:
        if not sources:
            r.error(at, f"give exactly one key source: {names(JWKS_SOURCES)}")
        else:
            r.error(m[sources[1]], f"give exactly one key source, found {', '.join(sources)}")
        return None
    kind = sources[0]
    allow_http = False
    if "allow_http" in m:
        allow_http = bool(r.boolean(m["allow_http"]))
    kw: dict[str, Any] = {"allow_http": allow_http}
    for key in ("refresh_interval", "min_refresh_interval", "timeout"):
        if key in m and (seconds := r.duration(m[key])) is not None:
            kw[key] = seconds
    refresh = kw.get("refresh_interval", _JWKS_DEFAULTS.refresh_interval)
    min_refresh = kw.get("min_refresh_interval", _JWKS_DEFAULTS.min_refresh_interval)
    if "refresh_interval" in m or "min_refresh_interval" in m:
        if isinstance(refresh, float) and isinstance(min_refresh, float) and min_refresh > refresh:
            where = m["min_refresh_interval"] if "min_refresh_interval" in m else m["refresh_interval"]
            r.error(where, f"min_refresh_interval ({min_refresh:g}s) exceeds refresh_interval ({refresh:g}s)")
    src = m[kind]
    if kind in ("uri", "discovery"):
        url = r.string(src)
        if url is not None:
            try:
                check_http_url(url, allow_http=allow_http, what=f"jwks {kind}")
            except ValueError as exc:
                r.error(src, str(exc))
            kw["location"] = url
    elif kind == "file":
        kw["location"] = _jwks_file(r, src)
    else:
        kw["inline"] = _jwks_inline(r, src)
    if len(r.issues) != before:
        return None
    return JwksConfig(kind=kind, **kw)  # type: ignore[arg-type]


def _jwks_file(r: Reader, at: At) -> str | None:
    name = r.string(at)
    if name is None:
        return None
    path = r.resolve(name)
    data = r.read_file(at, path, what="JWK Set file", limit=MAX_JWKS_FILE_BYTES)
    if data is None:
        return None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        r.error(at, f"{path} is not JSON: {getattr(exc, 'msg', 'undecodable')}")
        return None
    for where, problem in _jwk_set_problems(document, allow_empty=True):
        r.error(at, f"{path}{where}: {problem}")
    return str(path)


def _jwks_inline(r: Reader, at: At) -> dict[str, Any] | None:
    document = r.plain(at)
    if document is None:
        return None
    problems = _jwk_set_problems(document, allow_empty=False)
    for where, problem in problems:
        r.error_at(f"{at.path}{where}", at.line, problem)
    return document if not problems and isinstance(document, dict) else None


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
