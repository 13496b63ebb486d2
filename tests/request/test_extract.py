"""Tests for gateway.extract: one token, from one place, well-formed (RFC 6750)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config.model import DEFAULT_TOKEN_SOURCES, TokenSource
from gateway.extract import MAX_QUERY_FIELDS, ExtractError, TokenExtractor

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_"
ALL = TokenExtractor(
    [
        TokenSource("header", "Authorization", "Bearer "),
        TokenSource("cookie", "access_token"),
        TokenSource("query", "access_token"),
    ]
)
DEFAULT = TokenExtractor(DEFAULT_TOKEN_SOURCES)


def h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def kind_of(extractor: TokenExtractor, headers: CIMultiDictProxy[str], query: str = "") -> str:
    with pytest.raises(ExtractError) as info:
        extractor.extract(headers, query)
    return info.value.kind


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {JWT}",
        f"bearer {JWT}",
        f"BEARER {JWT}",
        f"BeArEr {JWT}",
        f"Bearer    {JWT}",
        f"Bearer {JWT}  ",
    ],
)
def test_bearer_header(value: str) -> None:
    assert DEFAULT.extract(h(("Authorization", value)), "") == JWT
    assert DEFAULT.extract(h(("authorization", value)), "") == JWT


def test_b64token_charset_and_padding() -> None:
    for token in ("abc", "a+b/c==", "a-b_c~d.e", "A=", "x=="):
        assert DEFAULT.extract(h(("Authorization", f"Bearer {token}")), "") == token


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer     ",
        "Bearer abc def",
        "Bearer abc\tdef",
        "Bearer a=b",
        "Bearer =abc",
        "Bearer abc,def",
        'Bearer "abc"',
        "Bearer abc\x00",
        "Bearer é",
    ],
)
def test_malformed_bearer(value: str) -> None:
    assert kind_of(DEFAULT, h(("Authorization", value))) == "malformed"


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Digest x=1", "", "Bearerabc", "Bearer\tabc", "Token abc"]
)
def test_other_schemes_are_not_tokens(value: str) -> None:
    assert DEFAULT.extract(h(("Authorization", value)), "") is None


def test_no_header() -> None:
    assert DEFAULT.extract(h(), "") is None
    assert DEFAULT.extract(h(("Cookie", f"access_token={JWT}")), f"access_token={JWT}") is None


def test_two_authorization_headers_are_multiple() -> None:
    headers = h(("Authorization", f"Bearer {JWT}"), ("authorization", "Basic x"))
    assert kind_of(DEFAULT, headers) == "multiple"


def test_custom_header_without_prefix() -> None:
    extractor = TokenExtractor([TokenSource("header", "X-Api-Token", None)])
    assert extractor.extract(h(("x-api-token", f" {JWT} ")), "") == JWT
    assert kind_of(extractor, h(("X-Api-Token", "a b"))) == "malformed"
    assert kind_of(extractor, h(("X-Api-Token", ""))) == "malformed"


def test_plain_mapping_headers() -> None:
    assert DEFAULT.extract({"authorization": f"Bearer {JWT}"}, "") == JWT
    both = {"authorization": "Bearer a", "Authorization": "Bearer b"}
    with pytest.raises(ExtractError) as info:
        DEFAULT.extract(both, "")
    assert info.value.kind == "multiple"


@pytest.mark.parametrize(
    "cookie",
    [
        f"access_token={JWT}",
        f"a=1; access_token={JWT}",
        f"a=1;access_token={JWT};b=2",
        f"  access_token = {JWT} ; b=2",
        f"x_access_token=nope; access_token={JWT}",
    ],
)
def test_cookie(cookie: str) -> None:
    assert ALL.extract(h(("Cookie", cookie)), "") == JWT


def test_cookie_absent_or_empty() -> None:
    assert ALL.extract(h(("Cookie", "a=1; b=2")), "") is None
    assert ALL.extract(h(("Cookie", "access_token=")), "") is None
    assert ALL.extract(h(("Cookie", "access_token")), "") is None
    assert ALL.extract(h(("Cookie", "my_access_token=x")), "") is None


def test_cookie_twice_is_multiple() -> None:
    assert kind_of(ALL, h(("Cookie", "access_token=a; access_token=b"))) == "multiple"
    assert kind_of(ALL, h(("Cookie", "access_token=a"), ("Cookie", "access_token=a"))) == "multiple"
    assert kind_of(ALL, h(("Cookie", "access_token=; access_token=b"))) == "multiple"


def test_cookie_malformed() -> None:
    assert kind_of(ALL, h(("Cookie", 'access_token="a b"'))) == "malformed"


def test_query() -> None:
    assert ALL.extract(h(), f"x=1&access_token={JWT}") == JWT
    assert ALL.extract(h(), f"access%5Ftoken={JWT}") == JWT  # encoded name is the same name
    assert ALL.extract(h(), "access_token=") is None
    assert ALL.extract(h(), "x=1") is None
    assert ALL.extract(h(), "") is None
    assert ALL.extract(h(), "access_token_x=1") is None


def test_query_twice_is_multiple() -> None:
    assert kind_of(ALL, h(), "access_token=a&access_token=b") == "multiple"
    assert kind_of(ALL, h(), "access_token=a&access%5ftoken=a") == "multiple"


def test_query_malformed() -> None:
    assert kind_of(ALL, h(), "access_token=a+b") == "malformed"  # '+' is a space in a query
    assert kind_of(ALL, h(), "access_token=%00") == "malformed"


def test_query_field_count_is_bounded() -> None:
    query = "&".join(f"f{i}=1" for i in range(MAX_QUERY_FIELDS + 1)) + "&access_token=a"
    assert kind_of(ALL, h(), query) == "malformed"


def test_semicolon_is_not_a_query_separator() -> None:
    assert ALL.extract(h(), "x=1;access_token=a") is None


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        (h(("Authorization", f"Bearer {JWT}"), ("Cookie", f"access_token={JWT}")), ""),
        (h(("Authorization", f"Bearer {JWT}")), f"access_token={JWT}"),
        (h(("Cookie", "access_token=a")), "access_token=b"),
        (h(("Authorization", "Bearer a b"), ("Cookie", "access_token=a")), ""),  # multiple wins
    ],
)
def test_more_than_one_place_is_multiple(headers: CIMultiDictProxy[str], query: str) -> None:
    assert kind_of(ALL, headers, query) == "multiple"


def test_other_scheme_plus_cookie_is_the_cookie() -> None:
    headers = h(("Authorization", "Basic dXNlcjpwYXNz"), ("Cookie", f"access_token={JWT}"))
    assert ALL.extract(headers, "") == JWT


def test_messages_never_hold_the_token() -> None:
    secret = "SECRETSECRET"
    cases = [
        (h(("Authorization", f"Bearer {secret} x")), ""),
        (h(("Authorization", f"Bearer {secret}"), ("Cookie", f"access_token={secret}")), ""),
        (h(), f"access_token={secret}&access_token={secret}"),
    ]
    for headers, query in cases:
        with pytest.raises(ExtractError) as info:
            ALL.extract(headers, query)
        assert secret not in str(info.value) and secret not in info.value.message


def test_no_sources() -> None:
    assert TokenExtractor([]).extract(h(("Authorization", "Bearer x")), "access_token=y") is None
