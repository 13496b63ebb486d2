"""Find the one bearer token a request carries, in the configured header, cookie or query parameter.

Rules (RFC 6750), for every configured source:

- header (default ``Authorization`` with prefix ``Bearer ``): more than one
  such header is ``multiple``. The prefix is matched case-insensitively and
  further spaces after it are tolerated. A value with another scheme
  (``Basic ...``) is not a token. The scheme with no token after it, or a
  token outside the RFC 6750 §2.1 ``b64token`` syntax
  (``ALPHA DIGIT - . _ ~ + /``, then ``=`` padding only), is ``malformed``.
  An empty prefix means the whole value, spaces stripped, is the token.
- cookie: every ``Cookie`` header is split on ``;`` into ``name=value`` pairs
  (spaces stripped; deliberately not ``http.cookies``, which is lax about
  what it accepts). The cookie named twice is ``multiple``.
- query: the query string is parsed with ``parse_qsl`` (blank values kept,
  at most ``MAX_QUERY_FIELDS`` fields, more is ``malformed``); the parameter
  named twice is ``multiple``.

Cookie and query tokens must also be ``b64token``s. An empty cookie or query
value counts as absent (a logged-out browser sends ``access_token=``), but it
still counts toward ``multiple`` within its own source. A token found in more
than one source is ``multiple`` (RFC 6750 §2: clients MUST NOT use more than
one method), and ``multiple`` wins over ``malformed``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl

from gateway.asked import Headers, header_values
from gateway.config.model import TokenSource

__all__ = ["MAX_QUERY_FIELDS", "ExtractError", "TokenExtractor"]

ExtractKind = Literal["multiple", "malformed"]

MAX_QUERY_FIELDS: Final = 256
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class ExtractError(Exception):
    """The request's token cannot be taken: `kind` is ``multiple`` (400
    invalid_request) or ``malformed`` (401 invalid_token); the message is a
    fixed sentence that never holds the token."""

    __slots__ = ("kind", "message")

    def __init__(self, kind: ExtractKind, message: str) -> None:
        super().__init__(message)
        self.kind: ExtractKind = kind
        self.message = message


_ABSENT: Final = 0
_FOUND: Final = 1
_MALFORMED: Final = 2


class _HeaderSource:
    __slots__ = ("name", "needs_space", "scheme", "scheme_len")

    def __init__(self, source: TokenSource) -> None:
        self.name = source.name
        prefix = source.prefix or ""
        self.scheme = prefix.rstrip(" ").lower()
        self.scheme_len = len(self.scheme)
        # "Bearer " needs a space between scheme and token; a prefix without
        # a trailing space ("Token:") is glued to it.
        self.needs_space = prefix != prefix.rstrip(" ")

    def find(self, headers: Headers, query_string: str) -> tuple[int, str]:
        values = header_values(headers, self.name)
        if not values:
            return _ABSENT, ""
        if len(values) > 1:
            raise ExtractError("multiple", f"more than one {self.name} header")
        value = values[0]
        n = self.scheme_len
        if n:
            if value[:n].lower() != self.scheme:
                return _ABSENT, ""  # another scheme: not ours
            rest = value[n:]
            if self.needs_space and rest and rest[0] != " ":
                return _ABSENT, ""  # "Bearerfoo": another scheme too
        else:
            rest = value
        token = rest.strip(" ")
        if not token or _B64TOKEN.fullmatch(token) is None:
            return _MALFORMED, ""
        return _FOUND, token


class _CookieSource:
    __slots__ = ("name",)

    def __init__(self, source: TokenSource) -> None:
        self.name = source.name

    def find(self, headers: Headers, query_string: str) -> tuple[int, str]:
        name = self.name
        found: str | None = None
        for header in header_values(headers, "Cookie"):
            if name not in header:  # cheap skip before splitting
                continue
            for pair in header.split(";"):
                key, eq, value = pair.partition("=")
                if not eq or key.strip(" \t") != name:
                    continue
                if found is not None:
                    raise ExtractError("multiple", "the token cookie is present more than once")
                found = value.strip(" \t")
        return _token_state(found)


class _QuerySource:
    __slots__ = ("name",)

    def __init__(self, source: TokenSource) -> None:
        self.name = source.name

    def find(self, headers: Headers, query_string: str) -> tuple[int, str]:
        # The name may arrive percent-encoded; only then is '%' needed to hide it.
        if not query_string or (self.name not in query_string and "%" not in query_string):
            return _ABSENT, ""
        try:
            pairs = parse_qsl(
                query_string, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS
            )
        except ValueError as exc:
            raise ExtractError("malformed", "too many query parameters") from exc
        found: str | None = None
        for key, value in pairs:
            if key == self.name:
                if found is not None:
                    raise ExtractError(
                        "multiple", "the token query parameter is present more than once"
                    )
                found = value
        return _token_state(found)


def _token_state(value: str | None) -> tuple[int, str]:
    if not value:
        return _ABSENT, ""
    if _B64TOKEN.fullmatch(value) is None:
        return _MALFORMED, ""
    return _FOUND, value


_Source = _HeaderSource | _CookieSource | _QuerySource
_SOURCE_KINDS: dict[str, type[_Source]] = {"header": _HeaderSource, "cookie": _CookieSource, "query": _QuerySource}


# RFC 9449 §7.1: the DPoP scheme, in the Authorization header only, with the Bearer syntax.
DPOP_SOURCE: Final = TokenSource("header", "Authorization", "DPoP ")


class TokenExtractor:
    """The compiled ``tokens`` section (plus the DPoP scheme when an issuer uses it):
    finds the request's single token."""

    __slots__ = ("_dpop", "_sources")

    def __init__(self, sources: Sequence[TokenSource], *, dpop_scheme: bool = False) -> None:
        compiled = [_SOURCE_KINDS[s.location](s) for s in sources]
        self._dpop: _Source | None = _HeaderSource(DPOP_SOURCE) if dpop_scheme else None
        if self._dpop is not None:
            compiled.append(self._dpop)  # one more place: the one-location rule counts it too
        self._sources = tuple(compiled)

    def extract(self, headers: Headers, query_string: str) -> str | None:
        """The token, or None when the request carries none; ExtractError when
        it carries several or a malformed one."""
        return self.extract_with_scheme(headers, query_string)[0]

    def extract_with_scheme(self, headers: Headers, query_string: str) -> tuple[str | None, bool]:
        """`extract`, and whether the token came with the DPoP scheme."""
        token: str | None = None
        found: _Source | None = None
        seen = 0
        malformed = False
        for source in self._sources:
            state, value = source.find(headers, query_string)
            if state:
                seen += 1
                malformed = malformed or state == _MALFORMED
                token = value
                found = source
        if seen > 1:
            raise ExtractError("multiple", "a token was sent in more than one place")
        if malformed:
            raise ExtractError("malformed", "the bearer token is malformed")
        return token, found is not None and found is self._dpop
