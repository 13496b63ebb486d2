"""Fuzz token extraction from the Authorization header, a cookie and a query parameter.

Input: a count byte, then per header a name byte and a NUL-terminated value
(latin-1), then the query string. The extractor is the one the default config
plus `cookie: access_token` and `query: access_token` compiles.

Invariants: only ExtractError escapes; a returned token is an RFC 6750 b64token
that the request really carries in one of the three places (by an independent
reading of each place); well-formed tokens in two places, or two Authorization
headers, are always `multiple`; a single well-formed token in a single place is
what comes back.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from multidict import CIMultiDict

from fuzz.common import Reader
from gateway.config.model import TokenSource
from gateway.extract import ExtractError, TokenExtractor

EXTRACTOR = TokenExtractor(
    (TokenSource("header", "Authorization", "Bearer "), TokenSource("cookie", "access_token"), TokenSource("query", "access_token"))
)
_NAMES = ("Authorization", "authorization", "Cookie", "cookie", "X-Other")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _header_candidates(values: list[str]) -> list[str]:
    out = []
    for value in values:
        # "Bearer" alone is the scheme without a token (malformed), "Bearerx" another scheme.
        if value[:6].lower() == "bearer" and value[6:7] in ("", " "):
            out.append(value[6:].strip(" "))
    return out


def _cookie_candidates(values: list[str]) -> list[str]:
    return [
        value.strip(" \t")
        for header in values
        for key, eq, value in (pair.partition("=") for pair in header.split(";"))
        if eq and key.strip(" \t") == "access_token"
    ]


def check(data: bytes) -> None:
    reader = Reader(data)
    headers: CIMultiDict[str] = CIMultiDict()
    for _ in range(reader.byte() % 6):
        name = _NAMES[reader.byte() % len(_NAMES)]
        headers.add(name, reader.chunk().decode("latin-1"))
    query = reader.rest().decode("latin-1")
    try:
        token = EXTRACTOR.extract(headers, query)
        error = None
    except ExtractError as exc:
        token, error = None, exc.kind

    in_header = _header_candidates(headers.getall("Authorization", []))
    in_cookie = _cookie_candidates(headers.getall("Cookie", []))
    try:
        in_query: list[str] | None = [v for k, v in parse_qsl(query, keep_blank_values=True, max_num_fields=256) if k == "access_token"]
    except ValueError:
        in_query = None
    if token is not None:
        assert _B64TOKEN.fullmatch(token), "returned a token outside the b64token syntax"
        assert token in in_header + in_cookie + (in_query or []), "returned a token the request does not carry"
    if len(headers.getall("Authorization", [])) > 1:
        assert error == "multiple", "two Authorization headers not refused as multiple"
    if in_query is None:
        return
    places = [[c for c in cands if c and _B64TOKEN.fullmatch(c)] for cands in (in_header, in_cookie, in_query)]
    if sum(1 for p in places if p) > 1:
        assert error == "multiple", "well-formed tokens in two places not refused as multiple"
    everything = in_header + in_cookie + in_query
    if len(everything) == 1 and _B64TOKEN.fullmatch(everything[0]) and len(headers.getall("Authorization", [])) <= 1:
        assert token == everything[0], "the one well-formed token was not returned"
