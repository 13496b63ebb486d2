"""Verified-token cache: skips signature work for a token seen before, never the time or route checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.jose.jwk import Jwk, KeySet


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and claims were checked once: what the request path needs of it."""

    issuer_name: str
    claims: dict[str, Any]
    key: Jwk  # the key that verified it: dropped from the cache when the key leaves its set
    exp: float | None
    nbf: float | None
    cache_until: float  # wall clock; min(exp, verified_at + ttl)


def _key(token: str) -> bytes:
    # A digest of the whole token, not the token: 32 bytes instead of ~600 per entry
    # (a signature alone would not do: it can be paired with another header and payload).
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    """Bounded map from (a digest of) the whole token to its VerifiedToken; oldest entries leave first."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self._entries: dict[bytes, VerifiedToken] = {}
        self._max = max_entries
        self.ttl = ttl

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> VerifiedToken | None:
        if not self._entries:
            return None
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.cache_until:
            del self._entries[key]
            return None
        return entry

    def put(self, token: str, entry: VerifiedToken) -> None:
        if self._max <= 0:
            return
        entries = self._entries
        key = _key(token)
        if key not in entries and len(entries) >= self._max:
            # Insertion order is age order: drop the oldest entry.
            del entries[next(iter(entries))]
        entries[key] = entry

    def drop_removed_keys(self, issuer_name: str, old: KeySet | None, new: KeySet) -> int:
        """Forget every token of `issuer_name` whose key is not in `new`: a revoked key stops working at once."""
        if old is None:
            return 0
        kept = new.keys
        stale = [
            token for token, entry in self._entries.items()
            if entry.issuer_name == issuer_name and not any(entry.key is k or entry.key == k for k in kept)
        ]
        for token in stale:
            del self._entries[token]
        return len(stale)

    def resize(self, max_entries: int, ttl: float) -> None:
        """Apply a reloaded cache config (call after clear())."""
        self._max = max_entries
        self.ttl = ttl

    def clear(self) -> None:
        self._entries.clear()
