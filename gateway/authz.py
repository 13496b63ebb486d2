"""Decide whether verified claims satisfy a route's claim rules, and name the first rule that does not.

Rules are compiled once per route; the request path only reads. Comparisons
follow the JSON data model, strictly: a string never equals a number, a
boolean never equals a number (``true`` is not ``1``), ``null`` equals only
``null``; integers and floats are both JSON numbers, so ``1`` equals ``1.0``.

- ``contains: item`` -- the claim is a space-separated string (an OAuth
  ``scope``, RFC 6749 §3.3) one of whose space-delimited words is exactly
  ``item`` (``admin`` is not in ``administrator``), or an array one of whose
  elements equals ``item``. Any other claim type fails.
- ``any_of: [v, ...]`` -- the claim equals one of the values, or is an array
  holding at least one of them. A string claim is compared whole, not split.
- ``equals: v`` -- the claim equals ``v`` (an array or object never equals a
  scalar).

A missing claim fails every rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.claim_path import MISSING, compile_claim_path, lookup_claim
from gateway.config.model import ClaimRule

__all__ = ["ClaimRules", "RuleOutcome"]

_ARRAY_TYPES: Final = (list, tuple)


class _ValueSet:
    """A set of JSON scalars with type-strict membership, without per-call
    allocation: one hash set per JSON type (a Python set alone would say
    ``True in {1}``)."""

    __slots__ = ("booleans", "null", "numbers", "strings")

    def __init__(self, values: Iterable[Any]) -> None:
        strings: set[str] = set()
        numbers: set[int | float] = set()
        booleans: set[bool] = set()
        null = False
        for value in values:
            if value is None:
                null = True
            elif isinstance(value, bool):
                booleans.add(value)
            elif isinstance(value, (int, float)):
                numbers.add(value)
            elif isinstance(value, str):
                strings.add(value)
            else:
                raise ValueError("claim rule values must be JSON scalars")
        self.strings = frozenset(strings)
        self.numbers = frozenset(numbers)
        self.booleans = frozenset(booleans)
        self.null = null

    def has(self, value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value in self.strings
        if kind is bool:
            return value in self.booleans
        if kind is int or kind is float:
            return value in self.numbers
        if value is None:
            return self.null
        return False

    def has_any(self, value: Any) -> bool:
        """The value is in the set, or is an array with an element in it."""
        if isinstance(value, _ARRAY_TYPES):
            has = self.has
            for element in value:
                if has(element):
                    return True
            return False
        return self.has(value)


def _contains_check(item: Any) -> Callable[[Any], bool]:
    in_array = _ValueSet((item,))
    if isinstance(item, str) and item and " " not in item:
        # Word boundaries by affixes precomputed here: no split() per request.
        head, tail, middle = item + " ", " " + item, " " + item + " "

        def in_string(value: str) -> bool:
            return (
                value == item
                or value.startswith(head)
                or value.endswith(tail)
                or middle in value
            )

    else:
        # An empty item or one with a space can never be a word of a
        # space-separated string.
        def in_string(value: str) -> bool:
            return False

    def check(value: Any) -> bool:
        if type(value) is str:
            return in_string(value)
        if isinstance(value, _ARRAY_TYPES):
            return in_array.has_any(value)
        return False

    return check


def _any_of_check(values: Any) -> Callable[[Any], bool]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = (values,)
    return _ValueSet(values).has_any


def _equals_check(expected: Any) -> Callable[[Any], bool]:
    return _ValueSet((expected,)).has


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule applied to one token's claims (for gateway explain)."""

    rule: ClaimRule
    value: Any  # the claim's value, or MISSING
    holds: bool


class ClaimRules:
    """A route's compiled claim rules: every rule must hold (else 403)."""

    __slots__ = ("_checks",)

    def __init__(self, rules: Sequence[ClaimRule]) -> None:
        checks: list[tuple[tuple[str, ...], str, Callable[[Any], bool], ClaimRule]] = []
        for rule in rules:
            if rule.op == "contains":
                check = _contains_check(rule.value)
            elif rule.op == "any_of":
                check = _any_of_check(rule.value)
            elif rule.op == "equals":
                check = _equals_check(rule.value)
            else:  # pragma: no cover - the config parser admits only the three
                raise ValueError(f"unknown claim rule op {rule.op!r}")
            checks.append((compile_claim_path(rule.claim), rule.claim, check, rule))
        self._checks = tuple(checks)

    def __bool__(self) -> bool:
        return bool(self._checks)

    def first_failure(self, claims: Mapping[str, Any]) -> str | None:
        """Return the configured claim path of the first rule that does not
        hold (safe to log: it is config, not a claim value), or None."""
        for parts, name, check, _rule in self._checks:
            value = lookup_claim(claims, parts)
            if value is MISSING or not check(value):
                return name
        return None

    def outcomes(self, claims: Mapping[str, Any]) -> list[RuleOutcome]:
        """Every rule with the claim's value and whether it holds: the same checks as first_failure."""
        out = []
        for parts, _name, check, rule in self._checks:
            value = lookup_claim(claims, parts)
            out.append(RuleOutcome(rule, value, value is not MISSING and check(value)))
        return out
