"""Tests for gateway.claim_path: dotted claim paths, and claims whose names hold dots."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.claim_path import MISSING, compile_claim_path, lookup_claim

CLAIMS: dict[str, Any] = {
    "sub": "u1",
    "null": None,
    "false": False,
    "realm_access": {"roles": ["admin", "ops"], "deep": {"x": 1}},
    "https://example.com/roles": ["editor"],
    "list": [{"a": 1}],
    "s": "text",
}


def test_compile() -> None:
    assert compile_claim_path("sub") == ("sub",)
    assert compile_claim_path("a.b.c") == ("a.b.c", "a", "b", "c")
    with pytest.raises(ValueError):
        compile_claim_path("")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sub", "u1"),
        ("null", None),
        ("false", False),
        ("realm_access.roles", ["admin", "ops"]),
        ("realm_access.deep.x", 1),
        ("realm_access", CLAIMS["realm_access"]),
        ("https://example.com/roles", ["editor"]),
    ],
)
def test_found(path: str, expected: Any) -> None:
    assert lookup_claim(CLAIMS, compile_claim_path(path)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "absent",
        "realm_access.absent",
        "realm_access.roles.0",  # arrays are not indexed
        "list.0.a",
        "s.length",  # intermediate is a string
        "null.x",  # intermediate is null
        "sub.x.y",
        "https://example.com/roles.x",
    ],
)
def test_missing(path: str) -> None:
    assert lookup_claim(CLAIMS, compile_claim_path(path)) is MISSING


def test_top_level_dotted_name_wins_over_nested() -> None:
    claims = {"a.b": "top", "a": {"b": "nested"}}
    assert lookup_claim(claims, compile_claim_path("a.b")) == "top"
    assert lookup_claim({"a": {"b": "nested"}}, compile_claim_path("a.b")) == "nested"


def test_top_level_null_is_found_not_missing() -> None:
    # A present null is a value; only absence falls through to the nested walk.
    assert lookup_claim({"a.b": None, "a": {"b": 1}}, compile_claim_path("a.b")) is None


def test_missing_is_falsy_and_distinct_from_none() -> None:
    assert not MISSING
    assert MISSING is not None
    assert repr(MISSING) == "MISSING"
