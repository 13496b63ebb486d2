"""Tests for gateway.claim_headers: claim values rendered as upstream headers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.claim_headers import ClaimHeaderPlan, header_value
from gateway.config.model import ForwardConfig

FORWARD = ForwardConfig(
    claims_to_headers=(
        ("sub", "X-User-Id"),
        ("email", "X-User-Email"),
        ("realm_access.roles", "X-User-Roles"),
        ("https://example.com/tenant", "X-Tenant"),
    ),
    payload_header="X-Jwt-Payload",
)


def test_strip_names_are_lower_case_and_include_payload_header() -> None:
    plan = ClaimHeaderPlan(FORWARD)
    assert plan.strip_names == frozenset(
        {"x-user-id", "x-user-email", "x-user-roles", "x-tenant", "x-jwt-payload"}
    )
    assert ClaimHeaderPlan(ForwardConfig()).strip_names == frozenset()


def test_headers_in_config_order_with_payload_last() -> None:
    plan = ClaimHeaderPlan(FORWARD)
    claims = {
        "sub": "u1",
        "email": "a@example.com",
        "realm_access": {"roles": ["admin", "ops"]},
        "https://example.com/tenant": "t9",
    }
    assert plan.headers(claims, "eyJzdWIiOiJ1MSJ9") == [
        ("X-User-Id", "u1"),
        ("X-User-Email", "a@example.com"),
        ("X-User-Roles", "admin,ops"),
        ("X-Tenant", "t9"),
        ("X-Jwt-Payload", "eyJzdWIiOiJ1MSJ9"),
    ]


def test_missing_and_null_claims_give_no_header() -> None:
    plan = ClaimHeaderPlan(FORWARD)
    assert plan.headers({"sub": None, "realm_access": "not an object"}, "p") == [
        ("X-Jwt-Payload", "p")
    ]


def test_no_payload_header_when_not_configured_or_empty() -> None:
    plan = ClaimHeaderPlan(ForwardConfig(claims_to_headers=(("sub", "X-User-Id"),)))
    assert plan.headers({"sub": "u"}, "p") == [("X-User-Id", "u")]
    assert ClaimHeaderPlan(FORWARD).headers({}, "") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("é ü 漢字", "é ü 漢字"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (1e21, "1e+21"),
        (["a", "b"], "a,b"),
        ([], ""),
        ([1, True, None, 2.5], "1,true,null,2.5"),
        ([{"a": 1}], '{"a":1}'),
        ({"a": 1, "b": [1, 2], "c": "é"}, '{"a":1,"b":[1,2],"c":"é"}'),
        ({"a": "line\nbreak"}, '{"a":"line\\nbreak"}'),  # JSON escapes C0 controls
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        ({"a": float("nan")}, None),
        ("a\r\nX-Evil: 1", None),
        ("a\x00", None),
        ("tab\there", None),
        ("del\x7f", None),
        ("c1\x85", None),
        ("ls\u2028", None),
        ("ps\u2029", None),
        (["ok", "bad\n"], None),
        ({"a": "\u2028"}, None),
        ({"a": "\x7f"}, None),
        (["a,b"], None),  # could not be split back
        ([{"a": 1, "b": 2}], None),
        ([[1, 2]], None),
    ],
)
def test_header_value(value: Any, expected: str | None) -> None:
    assert header_value(value) == expected
    plan = ClaimHeaderPlan(ForwardConfig(claims_to_headers=(("c", "X-C"),)))
    assert plan.headers({"c": value}, "") == ([] if expected is None else [("X-C", expected)])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(_json)
def test_never_forwards_a_control_character(value: Any) -> None:
    text = header_value(value)
    if text is not None:
        assert not any(
            ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text
        )
