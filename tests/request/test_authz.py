"""Tests for gateway.authz: claim rules, strict JSON comparisons, first failing rule."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.authz import ClaimRules
from gateway.config.model import ClaimRule


def holds(op: str, value: Any, claim: Any) -> bool:
    rules = ClaimRules([ClaimRule("c", op, value)])  # type: ignore[arg-type]
    return rules.first_failure({"c": claim}) is None


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("admin", True),
        ("read admin write", True),
        ("admin write", True),
        ("read admin", True),
        ("read  admin  write", True),
        ("administrator", False),
        ("read administrator", False),
        ("superadmin", False),
        ("read superadmin write", False),
        ("admins", False),
        ("", False),
        (["admin", "ops"], True),
        (["administrator"], False),
        (["read admin"], False),  # array elements are compared whole
        ([], False),
        ({"admin": True}, False),
        (True, False),
        (None, False),
    ],
)
def test_contains(claim: Any, expected: bool) -> None:
    assert holds("contains", "admin", claim) is expected


def test_contains_non_string_item_in_array() -> None:
    assert holds("contains", 5, [1, 5])
    assert not holds("contains", 1, [True])
    assert not holds("contains", True, [1])
    assert not holds("contains", 5, "5")


def test_contains_item_with_space_or_empty_never_matches_a_string() -> None:
    assert not holds("contains", "a b", "x a b y")
    assert not holds("contains", "", "a  b")
    assert holds("contains", "a b", ["a b"])


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("admin", True),
        ("ops", True),
        ("user", False),
        ("admin ops", False),  # a string is compared whole
        (["user", "ops"], True),
        (["user"], False),
        ([], False),
        (None, False),
    ],
)
def test_any_of(claim: Any, expected: bool) -> None:
    assert holds("any_of", ("admin", "ops"), claim) is expected


def test_any_of_types_are_strict() -> None:
    assert not holds("any_of", (1, 2), True)
    assert not holds("any_of", (True,), 1)
    assert not holds("any_of", ("1",), 1)
    assert holds("any_of", (1,), 1.0)
    assert holds("any_of", (False, None), None)
    assert holds("any_of", (False, None), [0, False])
    assert not holds("any_of", (False,), [0, None, ""])


@pytest.mark.parametrize(
    ("expected", "claim", "result"),
    [
        (True, True, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        ("1", 1, False),
        (1, "1", False),
        (1, 1, True),
        (1, 1.0, True),
        ("a", "a", True),
        ("a", ["a"], False),
        (None, None, True),
        (None, False, False),
        (True, {"x": True}, False),
    ],
)
def test_equals(expected: Any, claim: Any, result: bool) -> None:
    assert holds("equals", expected, claim) is result


def test_missing_claim_fails_every_op() -> None:
    for op, value in (("contains", "a"), ("any_of", ("a",)), ("equals", None)):
        rules = ClaimRules([ClaimRule("absent.path", op, value)])  # type: ignore[arg-type]
        assert rules.first_failure({"c": "a"}) == "absent.path"


def test_first_failure_names_the_first_failing_rule_in_order() -> None:
    rules = ClaimRules(
        [
            ClaimRule("scope", "contains", "admin"),
            ClaimRule("realm_access.roles", "any_of", ("admin", "ops")),
            ClaimRule("email_verified", "equals", True),
        ]
    )
    good = {"scope": "read admin", "realm_access": {"roles": ["ops"]}, "email_verified": True}
    assert rules.first_failure(good) is None
    assert rules.first_failure({**good, "email_verified": 1}) == "email_verified"
    assert rules.first_failure({**good, "realm_access": {"roles": "ops"}}) is None
    assert rules.first_failure({**good, "realm_access": ["ops"]}) == "realm_access.roles"
    assert rules.first_failure({"email_verified": False}) == "scope"


def test_dotted_top_level_claim_name() -> None:
    rules = ClaimRules([ClaimRule("https://example.com/roles", "contains", "admin")])
    assert rules.first_failure({"https://example.com/roles": ["admin"]}) is None


def test_empty_rules() -> None:
    rules = ClaimRules([])
    assert not rules
    assert rules.first_failure({}) is None


def test_non_scalar_rule_value_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        ClaimRules([ClaimRule("c", "equals", {"a": 1})])


_words = st.text(alphabet="abc", min_size=1, max_size=3)


@given(st.lists(st.tuples(st.sampled_from(["", " ", "  "]), _words), max_size=6), _words)
def test_contains_string_agrees_with_split(pieces: list[tuple[str, str]], item: str) -> None:
    scope = "".join(sep + word for sep, word in pieces)
    assert holds("contains", item, scope) is (item in scope.split(" "))
