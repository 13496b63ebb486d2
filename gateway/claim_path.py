"""Resolve a configured dotted claim path (``realm_access.roles``) against a verified claims object.

A path is compiled once into a tuple: element 0 is the whole configured name,
elements 1.. are its dot-separated segments (present only when the name holds
a dot). Lookup first tries the whole name as a top-level claim, so a claim
whose own name contains dots (``https://example.com/roles``, common for
namespaced custom claims) is reachable; only when no such top-level claim
exists is the name walked segment by segment through nested JSON objects.
Arrays are not indexed: an intermediate that is not an object means the claim
is missing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MISSING", "compile_claim_path", "lookup_claim"]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""Returned by lookup_claim when the claim is absent (distinct from a JSON null)."""


def compile_claim_path(dotted: str) -> tuple[str, ...]:
    """Compile a dotted claim path: ``"sub"`` -> ``("sub",)``,
    ``"a.b"`` -> ``("a.b", "a", "b")`` (whole name first, then segments)."""
    if not dotted:
        raise ValueError("claim path must not be empty")
    if "." not in dotted:
        return (dotted,)
    return (dotted, *dotted.split("."))


def lookup_claim(claims: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """Return the claim value at `parts` (from compile_claim_path), or MISSING
    when it is absent or an intermediate value is not a JSON object."""
    value = claims.get(parts[0], MISSING)
    if value is not MISSING or len(parts) == 1:
        return value
    current: Any = claims
    for i in range(1, len(parts)):
        if not isinstance(current, dict) and not isinstance(current, Mapping):
            return MISSING
        current = current.get(parts[i], MISSING)
        if current is MISSING:
            return MISSING
    return current
