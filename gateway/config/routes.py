"""The `routes` section: path/method/host matchers, the auth mode, allowed issuers and claim rules of each route."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from gateway.config.issuers import declared_issuer_names
from gateway.config.model import ClaimRule, RouteConfig, RouteMatch
from gateway.config.reader import At, Block, Reader, child_path, claim_path_ok, is_scalar, kind, names, suggest
from gateway.config.values import is_hostname, is_token

_ROUTE_KEYS = ("name", "match", "auth", "issuers", "claims")
_MATCH_KEYS = ("prefix", "path", "regex", "methods", "host")
_RULE_OPS = ("contains", "any_of", "equals")
_AUTH_MODES = ("public", "optional", "required")
_UNRESERVED_PCT = re.compile(r"%(?:4[1-9A-Fa-f]|5[0-9Aa]|6[1-9A-Fa-f]|7[0-9Aa]|3[0-9]|2[DdEe]|5[Ff]|7[Ee])")


def _read(r: Reader, _at: At, found: Mapping[str, At], fields: dict[str, Any]) -> None:
    if "routes" in found:
        fields["routes"] = parse_routes(r, found["routes"], declared_issuer_names(found.get("issuers")))


# The document's `routes` block: routes name the issuers the document declares.
ROUTES_SECTION = Block(("routes",), _read)


def parse_routes(r: Reader, at: At, issuer_names: dict[str, int | None] | None) -> tuple[RouteConfig, ...]:
    items = r.seq(at, nonempty=False)
    if items is None:
        return ()
    out: list[RouteConfig] = []
    seen: dict[str, int | None] = {}
    for item in items:
        m = r.mapping(item, _ROUTE_KEYS, required=("name", "match"))
        if m is None:
            continue
        before = len(r.issues)
        name = r.label(m["name"], seen, what="route name") if "name" in m else None
        match = _match(r, m["match"]) if "match" in m else None
        auth = r.choice(m["auth"], _AUTH_MODES) if "auth" in m else "required"
        kw: dict[str, Any] = {}
        if "issuers" in m:
            if auth == "public":
                r.error(m["issuers"], "a public route checks no token: remove issuers, or use auth: optional/required")
            else:
                kw["issuers"] = _route_issuers(r, m["issuers"], issuer_names)
        elif auth in ("optional", "required") and issuer_names is not None and not issuer_names:
            where = m["auth"] if "auth" in m else item
            r.error_at(
                child_path(item.path, "auth"), where.line,
                f"auth: {auth} needs an issuer, and none is configured (use auth: public, or add issuers)",
            )
        if "claims" in m:
            if auth == "public":
                r.error(m["claims"], "claim rules never run on a public route (it checks no token): use auth: required")
            else:
                kw["claims"] = _claims(r, m["claims"])
        if len(r.issues) == before and name is not None and match is not None and auth is not None:
            out.append(RouteConfig(name=name, match=match, auth=auth, **kw))  # type: ignore[arg-type]
    return tuple(out)


def _route_issuers(r: Reader, at: At, known: dict[str, int | None] | None) -> tuple[str, ...] | None:
    def check(item: At, name: str) -> bool:
        if known is not None and name not in known:
            configured = names(known) if known else "none"
            r.error(item, f"unknown issuer {name!r}{suggest(name, known)} (configured: {configured})")
            return False
        return True

    return r.strings(at, what="issuer name", check=check)


def _match(r: Reader, at: At) -> RouteMatch | None:
    m = r.mapping(at, _MATCH_KEYS)
    if m is None:
        return None
    before = len(r.issues)
    kw: dict[str, Any] = {}
    kinds = [k for k in ("prefix", "path", "regex") if k in m]
    if len(kinds) > 1:
        r.error(m[kinds[1]], f"give at most one of prefix, path, regex (found {', '.join(kinds)})")
    for key in ("prefix", "path"):
        if key in m and (p := r.string(m[key])) is not None:
            problem = path_problem(p)
            if problem:
                r.error(m[key], problem)
            else:
                kw[key] = p
    if "regex" in m and (rx := r.string(m["regex"])) is not None:
        try:
            re.compile(rx)
        except re.error as exc:
            r.error(m["regex"], f"regular expression does not compile: {exc}")
        else:
            kw["regex"] = rx
    if "methods" in m:

        def method_ok(item: At, method: str) -> bool:
            if not is_token(method):
                r.error(item, f"{method!r} is not an HTTP method name (RFC 9110 token)")
                return False
            return True

        methods = r.strings(m["methods"], what="method", fold=str.upper, check=method_ok)
        if methods is not None:
            kw["methods"] = tuple(x.upper() for x in methods)
    if "host" in m and (host := r.string(m["host"])) is not None:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if ":" in host and not host.startswith("["):
            r.error(m["host"], f"{host!r}: give the host without a port (hosts are compared without it)")
        elif not (is_hostname(bare) or _is_ipv6(bare)):
            r.error(m["host"], f"{host!r} is not a host name")
        else:
            kw["host"] = bare.lower().rstrip(".")
    if len(r.issues) != before:
        return None
    return RouteMatch(**kw)


def _claims(r: Reader, at: At) -> tuple[ClaimRule, ...]:
    rules: list[ClaimRule] = []
    for claim, _line, item in r.entries(at) or ():
        if not claim_path_ok(claim):
            r.error(item, f"claim path {claim!r} has an empty segment")
            continue
        m = r.mapping(item, _RULE_OPS)
        if m is None:
            continue
        if len(m) > 1:
            r.error(item, f"give exactly one rule, found {', '.join(m)}")
            continue
        if not m:
            if not item.value:  # otherwise its unknown keys are already reported
                r.error(item, f"give one rule: {names(_RULE_OPS)}")
            continue
        op, value_at = next(iter(m.items()))
        if op == "any_of":
            items = r.seq(value_at, what="value")
            if items is None:
                continue
            values = [v.value for v in items]
            bad = [v for v in items if not is_scalar(v.value)]
            for v in bad:
                r.error(v, f"must be a string, number or boolean, got {kind(v.value)}")
            if not bad:
                rules.append(ClaimRule(claim, "any_of", tuple(values)))
        elif not is_scalar(value_at.value):
            r.error(value_at, f"must be a string, number or boolean, got {kind(value_at.value)}")
        else:
            rules.append(ClaimRule(claim, op, value_at.value))  # type: ignore[arg-type]
    return tuple(rules)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


def path_problem(path: str) -> str | None:
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
