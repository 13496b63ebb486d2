"""The request a verdict is about, as plain values: the request itself on the proxy port, the conveyed one on the authz port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

Headers = CIMultiDictProxy[str] | CIMultiDict[str] | Mapping[str, str]


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header `name`, compared case-insensitively (RFC 9110 §5.1)."""
    if isinstance(headers, (CIMultiDictProxy, CIMultiDict)):
        return headers.getall(name, [])
    # A plain mapping (tests, other callers): compare names case-insensitively.
    lower = name.lower()
    return [v for k, v in headers.items() if k.lower() == lower]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ pays object.__setattr__ per field, per request
class Asked:
    """What the request path judges: routed by method, host and path; the token looked for in
    `headers` (header and cookie sources) and `query` (query source)."""

    method: str
    host: str | None
    raw_path: str  # as received, still percent-encoded: normalized by the request path
    query: str  # without the "?"
    headers: Headers

    @classmethod
    def from_target(cls, method: str, host: str | None, target: str, headers: Headers) -> Asked:
        """From an origin-form request target (RFC 9112 §3.2.1): path, then an optional ?query."""
        raw_path, _, query = target.partition("?")
        return cls(method, host, raw_path, query, headers)
