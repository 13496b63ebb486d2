"""Pick the first configured route that matches a request's method, host and normalized path.

Routes are compiled once; ``Router.match`` only compares. Matching rules:

- ``prefix`` matches whole segments: ``/public`` matches ``/public`` and
  ``/public/x``, not ``/publicity``; ``/`` matches every path; a prefix given
  with a trailing slash (``/api/``) matches ``/api/`` and ``/api/x`` but not
  ``/api``.
- ``path`` matches exactly; ``regex`` must match the whole path
  (``re.fullmatch``). All three are compared with the normalized path (see
  ``gateway.sanitize``), so config values must be written normalized too.
- ``methods`` compares upper-case (HTTP methods are case-sensitive, but an
  application may not treat them so); ``HEAD`` matches only when listed.
- ``host`` compares lower-cased, without the port and without one trailing
  dot; an IPv6 literal may be written with or without brackets. A request
  without a Host never matches a route that names one.

No route matching means 404.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.authz import ClaimRules
from gateway.config.model import AuthMode, RouteConfig

__all__ = ["Route", "Router", "host_key"]


@dataclass(frozen=True, slots=True)
class Route:
    """A matched route's policy, as the handler needs it."""

    name: str
    auth: AuthMode  # "public" | "optional" | "required"
    issuer_names: frozenset[str] | None  # None: every issuer
    rules: ClaimRules


def host_key(host: str) -> str:
    """The comparable form of a Host value or a configured host: lower-case,
    port removed, IPv6 brackets removed, one trailing dot removed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:  # name:port; more colons: a bare IPv6 literal
        host = host.partition(":")[0]
    if host.endswith("."):
        host = host[:-1]
    return host


_ANY: Final = 0
_PREFIX: Final = 1  # path == a or path.startswith(b)
_STARTS: Final = 2  # path.startswith(a)   (prefix with a trailing slash)
_EXACT: Final = 3
_REGEX: Final = 4


class _Compiled:
    __slots__ = ("a", "b", "host", "kind", "methods", "regex", "route")

    def __init__(self, config: RouteConfig) -> None:
        m = config.match
        self.a = ""
        self.b = ""
        self.regex: re.Pattern[str] | None = None
        if m.prefix is not None and m.prefix != "/":
            if m.prefix.endswith("/"):
                self.kind, self.a = _STARTS, m.prefix
            else:
                self.kind, self.a, self.b = _PREFIX, m.prefix, m.prefix + "/"
        elif m.path is not None:
            self.kind, self.a = _EXACT, m.path
        elif m.regex is not None:
            self.kind, self.regex = _REGEX, re.compile(m.regex)
        else:
            self.kind = _ANY
        self.methods: frozenset[str] | None = (
            None if m.methods is None else frozenset(x.upper() for x in m.methods)
        )
        self.host: str | None = None if m.host is None else host_key(m.host)
        self.route = Route(
            name=config.name,
            auth=config.auth,
            issuer_names=None if config.issuers is None else frozenset(config.issuers),
            rules=ClaimRules(config.claims),
        )


class Router:
    """First-match router over compiled routes."""

    __slots__ = ("_routes", "_uses_host", "routes")

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = tuple(_Compiled(r) for r in routes)
        self._uses_host = any(c.host is not None for c in self._routes)
        self.routes: tuple[Route, ...] = tuple(c.route for c in self._routes)

    def match(self, method: str, host: str | None, path: str) -> Route | None:
        """The first route matching the request, or None (404). `path` must
        already be normalized."""
        request_host = host_key(host) if self._uses_host and host else None
        upper: str | None = None
        for c in self._routes:
            kind = c.kind
            if kind == _PREFIX:
                if path != c.a and not path.startswith(c.b):
                    continue
            elif kind == _STARTS:
                if not path.startswith(c.a):
                    continue
            elif kind == _EXACT:
                if path != c.a:
                    continue
            elif kind == _REGEX:
                assert c.regex is not None
                if c.regex.fullmatch(path) is None:
                    continue
            methods = c.methods
            if methods is not None and method not in methods:
                if upper is None:
                    upper = method.upper()
                if upper not in methods:
                    continue
            if c.host is not None and c.host != request_host:
                continue
            return c.route
        return None
