"""The config as JSON-ready data for people to read (admin /config), with every secret replaced by "<redacted>".

Redaction is by default, not by a list of fields: only plain data (strings,
numbers, booleans, null, lists, mappings and the config dataclasses made of
them) is shown. A `Secret` is redacted, and so is any value of any other type
(bytes, key objects, whatever a future block stores), so a new block that holds
key material is hidden without anyone remembering to extend this module. Two
plain-data cases are redacted as well: JWK private and symmetric members
(RFC 7518 §6.2.2, §6.3.2, §6.4.1) in inline key sets, and the query of a URL
(it may carry an API key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

from gateway.config.model import Secret

REDACTED: Final = "<redacted>"
_JWK_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "r", "t", "k"})


def redacted(value: Any) -> Any:
    """`value` as JSON-ready data with every secret, and anything not known to be plain data, redacted."""
    if isinstance(value, Secret):
        return REDACTED
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _without_query(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redacted(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): REDACTED if k in _JWK_PRIVATE_MEMBERS else redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((redacted(v) for v in value), key=str)
    return REDACTED


def _without_query(text: str) -> str:
    if text.lower().startswith(("http://", "https://")) and "?" in text:
        return text.partition("?")[0] + "?" + REDACTED
    return text
