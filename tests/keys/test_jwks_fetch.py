"""Tests for gateway.jwks_fetch: HTTP fetch rules, discovery, file sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest

from gateway.config.model import JwksConfig
from gateway.jwks_fetch import (
    MAX_DOCUMENT_BYTES,
    FetchError,
    FetchResult,
    FileSource,
    RemoteSource,
    Validators,
    check_scheme,
    discovery_url,
    fetch_json,
    jwks_uri_from_discovery,
    parse_json_object,
    parse_max_age,
)

from .helpers import ISSUER, JwksServer, KeySets


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://idp/", "https://idp/.well-known/openid-configuration"),
        ("https://idp", "https://idp/.well-known/openid-configuration"),
        ("https://idp/realms/x/", "https://idp/realms/x/.well-known/openid-configuration"),
        ("https://idp/.well-known/openid-configuration", "https://idp/.well-known/openid-configuration"),
        ("https://idp/.well-known/openid-configuration/", "https://idp/.well-known/openid-configuration"),
    ],
)
def test_discovery_url(location: str, expected: str) -> None:
    assert discovery_url(location) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("max-age=300", 300.0),
        ("public, max-age=60, must-revalidate", 60.0),
        ('MAX-AGE="42"', 42.0),
        ("s-maxage=10", None),
        ("no-store", 0.0),
        ("no-cache, max-age=600", 0.0),
        ("max-age=abc", None),
    ],
)
def test_parse_max_age(header: str | None, expected: float | None) -> None:
    assert parse_max_age(header) == expected


def test_check_scheme() -> None:
    assert str(check_scheme("https://idp/jwks", allow_http=False, what="u")) == "https://idp/jwks"
    assert check_scheme("http://idp/jwks", allow_http=True, what="u").scheme == "http"
    for url in ("http://idp/jwks", "ftp://idp/jwks", "file:///etc/jwks.json"):
        with pytest.raises(FetchError) as info:
            check_scheme(url, allow_http=False, what="u")
        assert info.value.result is FetchResult.REFUSED
    with pytest.raises(FetchError) as info:
        check_scheme("https:///nohost", allow_http=False, what="u")
    assert info.value.result is FetchResult.INVALID


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'"s"', b"\xff\xfe", b'{"keys": [], "keys": []}'], ids=["garbage", "array", "string", "not-utf8", "duplicate-member"]
)
def test_parse_json_object_rejects(raw: bytes) -> None:
    with pytest.raises(FetchError) as info:
        parse_json_object(raw, what="doc")
    assert info.value.result is FetchResult.INVALID


async def test_fetch_sends_validators_and_handles_304(server: JwksServer) -> None:
    server.etag = '"v1"'
    server.last_modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.cache_control = "max-age=120"
    async with aiohttp.ClientSession() as session:
        first = await fetch_json(session, server.jwks_url, timeout=2, allow_http=True)
        assert first.document == server.jwks
        assert first.validators == Validators('"v1"', "Wed, 21 Oct 2015 07:28:00 GMT")
        assert first.max_age == 120.0
        second = await fetch_json(session, server.jwks_url, timeout=2, allow_http=True, validators=first.validators)
    assert second.not_modified
    assert server.seen[-1].headers["If-None-Match"] == '"v1"'
    assert server.seen[-1].headers["If-Modified-Since"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert "If-None-Match" not in server.seen[0].headers


async def test_304_without_validators_is_an_error(server: JwksServer) -> None:
    server.status = 304
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.jwks_url, timeout=2, allow_http=True)
    assert info.value.result is FetchResult.HTTP_ERROR


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_is_cut_off(server: JwksServer, chunked: bool) -> None:
    server.raw = b'{"keys": [' + b" " * MAX_DOCUMENT_BYTES + b"]}"
    server.chunked = chunked
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.jwks_url, timeout=2, allow_http=True)
    assert info.value.result is FetchResult.TOO_LARGE


async def test_error_messages_never_hold_the_body(server: JwksServer) -> None:
    server.status = 500
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.jwks_url, timeout=2, allow_http=True)
    assert info.value.result is FetchResult.HTTP_ERROR
    assert "500" in info.value.message
    assert "SECRET" not in str(info.value)


async def test_plain_http_refused_without_a_request(server: JwksServer) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.jwks_url, timeout=2, allow_http=False)
    assert info.value.result is FetchResult.REFUSED
    assert server.seen == []


async def test_redirects_are_followed_a_bounded_number_of_times(server: JwksServer) -> None:
    async with aiohttp.ClientSession() as session:
        fetched = await fetch_json(session, server.base + "/redirect", timeout=2, allow_http=True)
        assert fetched.document == server.jwks
        server.redirect_to = "/redirect"  # a loop
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.base + "/redirect", timeout=2, allow_http=True)
    assert info.value.result is FetchResult.REFUSED
    assert server.hits("/redirect") == 1 + 4


async def test_redirect_to_another_scheme_refused(server: JwksServer) -> None:
    server.redirect_to = "file:///etc/passwd"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError) as info:
            await fetch_json(session, server.base + "/redirect", timeout=2, allow_http=True)
    assert info.value.result is FetchResult.REFUSED


def _discovery_config(server: JwksServer, location: str | None = None) -> JwksConfig:
    return JwksConfig(kind="discovery", location=location or server.base + "/", timeout=2, allow_http=True)


async def test_discovery_resolves_and_caches_jwks_uri(server: JwksServer) -> None:
    server.discovery = {"issuer": ISSUER, "jwks_uri": server.jwks_url}
    source = RemoteSource(_discovery_config(server), ISSUER)
    async with aiohttp.ClientSession() as session:
        first = await source.fetch(session)
        await source.fetch(session)
    assert first.document == server.jwks
    assert source.jwks_uri == server.jwks_url
    assert server.hits("/.well-known/openid-configuration") == 1
    assert server.hits("/jwks.json") == 2


async def test_discovery_re_resolves_after_a_failure(server: JwksServer) -> None:
    server.discovery = {"issuer": ISSUER, "jwks_uri": server.jwks_url}
    source = RemoteSource(_discovery_config(server), ISSUER)
    async with aiohttp.ClientSession() as session:
        await source.fetch(session)
        server.status = 500
        with pytest.raises(FetchError):
            await source.fetch(session)
        server.status = 200
        await source.fetch(session)
    assert server.hits("/.well-known/openid-configuration") == 2


@pytest.mark.parametrize(
    ("doc_issuer", "suffix"),
    [("https://evil.test/", "/"), ("https://idp.test", ""), ("https://idp.test/", "/.well-known/openid-configuration")],
    ids=["other-issuer", "missing-trailing-slash", "ok-explicit-url"],
)
async def test_discovery_issuer_must_match_exactly(server: JwksServer, doc_issuer: str, suffix: str) -> None:
    server.discovery = {"issuer": doc_issuer, "jwks_uri": server.jwks_url}
    source = RemoteSource(_discovery_config(server, server.base + suffix), ISSUER)
    async with aiohttp.ClientSession() as session:
        if doc_issuer == ISSUER:
            assert (await source.fetch(session)).document == server.jwks
            return
        with pytest.raises(FetchError) as info:
            await source.fetch(session)
    assert info.value.result is FetchResult.ISSUER_MISMATCH
    assert server.hits("/jwks.json") == 0


@pytest.mark.parametrize(
    ("document", "allow_http", "result"),
    [
        ({"issuer": ISSUER}, False, FetchResult.INVALID),
        ({"issuer": ISSUER, "jwks_uri": 42}, False, FetchResult.INVALID),
        ({"issuer": ISSUER, "jwks_uri": "http://idp.test/jwks"}, False, FetchResult.REFUSED),
        ({"issuer": ISSUER, "jwks_uri": "http://idp.test/jwks"}, True, None),
        ({"issuer": ISSUER, "jwks_uri": "https://idp.test/jwks"}, False, None),
        ({"jwks_uri": "https://idp.test/jwks"}, False, FetchResult.ISSUER_MISMATCH),
    ],
    ids=["missing", "not-a-string", "plain-http", "plain-http-allowed", "https", "no-issuer"],
)
def test_jwks_uri_from_discovery(document: dict[str, object], allow_http: bool, result: FetchResult | None) -> None:
    if result is None:
        assert jwks_uri_from_discovery(document, ISSUER, allow_http=allow_http) == document["jwks_uri"]
        return
    with pytest.raises(FetchError) as info:
        jwks_uri_from_discovery(document, ISSUER, allow_http=allow_http)
    assert info.value.result is result


def _write(path: Path, doc: object) -> None:
    # Write-then-rename, like every tool that updates files atomically.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_file_source_rereads_only_on_change(tmp_path: Path, key_sets: KeySets) -> None:
    path = tmp_path / "jwks.json"
    _write(path, key_sets.a)
    source = FileSource(str(path))
    assert source.changed()
    assert source.read() == key_sets.a
    assert not source.changed()
    _write(path, key_sets.b)
    assert source.changed()
    assert source.read() == key_sets.b
    assert not source.changed()


def test_file_source_errors(tmp_path: Path) -> None:
    missing = FileSource(str(tmp_path / "nope.json"))
    with pytest.raises(FetchError) as info:
        missing.read()
    assert info.value.result is FetchResult.IO_ERROR
    assert not missing.changed()  # still missing: nothing to re-read

    big = tmp_path / "big.json"
    big.write_bytes(b" " * 100)
    with pytest.raises(FetchError) as info:
        FileSource(str(big), max_bytes=10).read()
    assert info.value.result is FetchResult.TOO_LARGE
