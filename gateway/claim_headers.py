"""Turn verified claims into the request headers sent upstream, per ``forward.claims_to_headers`` and ``forward.payload_header``.

Header values, per SPEC:

- a string as it is; a number or boolean as JSON (``true``, ``1.5``, ``42``);
- an array joined with ``,``: string elements as they are, other elements
  as compact JSON. An array with an element whose rendering holds a ``,``
  is not forwarded, since the joined value could not be split back
  unambiguously (``["a,b"]`` would read as ``["a", "b"]``);
- an object as compact JSON (``{"a":1}``, non-ASCII kept as is);
- ``null``, a missing claim, a non-finite number, or a value holding a
  control character (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029) means no
  header: such a value could split or smuggle a header line downstream.

``payload_header`` carries the token's payload segment exactly as it was
signed: the base64url encoding, without padding, of the verified payload
bytes (RFC 7515 §7.1) -- not a re-serialization -- so the upstream can decode
the very JSON the signature covered.

``strip_names`` lists (lower-case) every header this plan may set, so the
handler removes client-supplied copies on every route before anything else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.claim_path import MISSING, compile_claim_path, lookup_claim
from gateway.config.model import ForwardConfig

__all__ = ["ClaimHeaderPlan", "header_value"]

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# One encoder built once: json.dumps with non-default options builds a new
# encoder on every call.
_COMPACT: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
)


def _clean(text: str) -> bool:
    # isascii/isprintable run in C; for ASCII, isprintable is exactly
    # "no U+0000-U+001F, no U+007F".
    if text.isascii():
        return text.isprintable()
    return _CONTROL.search(text) is None


def _element(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else None
    try:
        return _COMPACT.encode(value)
    except (TypeError, ValueError):  # not JSON (NaN inside, odd types)
        return None


def header_value(value: Any) -> str | None:
    """The header value for one claim value, or None when none is forwarded."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts: list[str] = []
        for element in value:
            text = _element(element)
            if text is None or "," in text:
                return None
            parts.append(text)
        text = ",".join(parts)
    else:
        text = _element(value)
        if text is None:
            return None
    return text if _clean(text) else None


class ClaimHeaderPlan:
    """The compiled ``forward`` section: which claims go to which headers."""

    __slots__ = ("_payload_header", "_plan", "strip_names")

    def __init__(self, forward: ForwardConfig) -> None:
        self._plan = tuple(
            (compile_claim_path(claim), header)
            for claim, header in forward.claims_to_headers
        )
        self._payload_header = forward.payload_header
        names = {header.lower() for _, header in forward.claims_to_headers}
        if forward.payload_header is not None:
            names.add(forward.payload_header.lower())
        self.strip_names: frozenset[str] = frozenset(names)

    def headers(
        self, claims: Mapping[str, Any], payload_segment: str
    ) -> list[tuple[str, str]]:
        """The (name, value) pairs to add upstream for these verified claims;
        `payload_segment` is the token's second compact-JWS segment."""
        out: list[tuple[str, str]] = []
        for parts, name in self._plan:
            value = lookup_claim(claims, parts)
            if type(value) is str:  # the common case, without the dispatch
                if _clean(value):
                    out.append((name, value))
                continue
            if value is MISSING:
                continue
            text = header_value(value)
            if text is not None:
                out.append((name, text))
        if self._payload_header is not None and payload_segment:
            out.append((self._payload_header, payload_segment))
        return out
