"""The `tokens` section: the places a token may be (header with prefix, cookie, query)."""

from __future__ import annotations

import re

from gateway.config.model import TokenSource
from gateway.config.reader import At, Reader, kind
from gateway.config.values import is_token

_TOKEN_KEYS = ("header", "cookie", "query", "prefix")
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]+")


def parse_tokens(r: Reader, at: At) -> tuple[TokenSource, ...] | None:
    """The token sources, or None (the default applies) when any of them is wrong."""
    items = r.seq(at, what="token source")
    if items is None:
        return None
    out: list[TokenSource] = []
    seen: dict[tuple[str, str], int | None] = {}
    ok = True
    for item in items:
        source = _token_source(r, item, seen)
        if source is None:
            ok = False
        else:
            out.append(source)
    return tuple(out) if ok else None


def _token_source(r: Reader, item: At, seen: dict[tuple[str, str], int | None]) -> TokenSource | None:
    m = r.mapping(item, _TOKEN_KEYS)
    if m is None:
        return None
    given = [k for k in ("header", "cookie", "query") if k in m]
    if len(given) != 1:
        found = f" (found {', '.join(given)})" if given else ""
        r.error(m[given[1]] if given else item, f"give exactly one of header, cookie, query{found}")
        return None
    where = given[0]
    name_at = m[where]
    name = r.string(name_at)
    if name is None:
        return None
    if where in ("header", "cookie") and not is_token(name):
        r.error(name_at, f"{name!r} is not a valid {where} name (RFC 9110 token characters)")
        return None
    if where == "query" and _QUERY_NAME.fullmatch(name) is None:
        r.error(name_at, f"{name!r} is not a valid query parameter name (letters, digits, . _ ~ -)")
        return None
    prefix: str | None = None
    if "prefix" in m:
        if where != "header":
            r.error(m["prefix"], f"prefix applies only to a header source, not to a {where}")
            return None
        if not isinstance(m["prefix"].value, str) or not m["prefix"].value:
            r.error(m["prefix"], f"must be a non-empty string such as \"Bearer \", got {kind(m['prefix'].value)}")
            return None
        prefix = m["prefix"].value
        if not prefix.isascii() or not prefix.isprintable():
            r.error(m["prefix"], "must be printable ASCII")
            return None
    key = (where, name.lower() if where == "header" else name)
    if key in seen:
        r.error(name_at, f"{where} {name!r} is listed twice (first on line {seen[key]})")
        return None
    seen[key] = name_at.line
    return TokenSource(where, name, prefix)
