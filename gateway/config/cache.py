"""The `cache` section: bounds of the verified-token cache (an extension to SPEC)."""

from __future__ import annotations

from typing import Any

from gateway.config.model import CacheConfig
from gateway.config.reader import At, Reader

MAX_CACHE_ENTRIES = 10_000_000
_CACHE_KEYS = ("max_entries", "ttl")


def parse_cache(r: Reader, at: At) -> CacheConfig | None:
    m = r.mapping(at, _CACHE_KEYS)
    if m is None:
        return None
    kw: dict[str, Any] = {}
    # 0 entries turns the verified-token cache off.
    if "max_entries" in m and (n := r.integer(m["max_entries"], 0, MAX_CACHE_ENTRIES)) is not None:
        kw["max_entries"] = n
    if "ttl" in m and (ttl := r.duration(m["ttl"])) is not None:
        kw["ttl"] = ttl
    return CacheConfig(**kw)
