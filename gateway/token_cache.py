"""Token verdict cache: skips signature work for a token seen before, never the time or route checks.

It remembers both verdicts. A verified token is kept until min(exp, ttl); a refused one
only for reasons that cannot change while keys and config stay as they are (a bad
signature, an expired token, garbage), so a client retrying an expired token in a loop,
or a flood of one forged token, costs a hash lookup instead of a signature check.
Refusals of an issuer are forgotten when its key set changes, everything on reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.jose.errors import Reason
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
    # A JWE (nested JWT): its verdict also depends on our decryption keys, and the payload
    # segment the payload header forwards is the inner JWS's, which the token string lacks.
    encrypted: bool = False
    payload_b64: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused token: the reason and safe sentence to repeat, and the issuer label it had."""

    issuer_name: str
    reason: Reason
    description: str
    cache_until: float
    encrypted: bool = False


# Reasons that hold for the same token until keys or config change.
STABLE_REJECTIONS = frozenset(
    {
        Reason.MALFORMED, Reason.TOO_LARGE, Reason.ALG_NOT_ALLOWED, Reason.UNSUPPORTED_CRIT, Reason.BAD_TYPE,
        Reason.BAD_SIGNATURE, Reason.BAD_AUDIENCE, Reason.EXPIRED, Reason.MISSING_EXPIRATION,
        Reason.LIFETIME_TOO_LONG, Reason.DECRYPT_FAILED, Reason.ENCRYPTION_REQUIRED,
    }
)

Verdict = VerifiedToken | Rejection


def _key(token: str) -> bytes:
    # A digest of the whole token, not the token: 32 bytes instead of ~600 per entry
    # (a signature alone would not do: it can be paired with another header and payload).
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    """Bounded map from (a digest of) the whole token to its verdict; oldest entries leave first."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self._entries: dict[bytes, Verdict] = {}
        self._max = max_entries
        self.ttl = ttl

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Verdict | None:
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

    def put(self, token: str, entry: Verdict) -> None:
        if self._max <= 0:
            return
        entries = self._entries
        key = _key(token)
        if key not in entries and len(entries) >= self._max:
            # Insertion order is age order: drop the oldest entry.
            del entries[next(iter(entries))]
        entries[key] = entry

    def drop_removed_keys(self, issuer_name: str, old: KeySet | None, new: KeySet) -> int:
        """A key set changed: forget every token of `issuer_name` whose key is not in `new` (a revoked
        key stops working at once), and every refusal of that issuer (a new key may verify it)."""
        kept = new.keys
        stale = [
            token for token, entry in self._entries.items()
            if entry.issuer_name == issuer_name
            and (isinstance(entry, Rejection) or not any(entry.key is k or entry.key == k for k in kept))
        ]
        for token in stale:
            del self._entries[token]
        return len(stale)

    def drop_encrypted(self) -> int:
        """The decryption keys changed: forget every verdict on a JWE, so a removed key's tokens
        are refused at once and a token an added key can open is tried again."""
        stale = [token for token, entry in self._entries.items() if entry.encrypted]
        for token in stale:
            del self._entries[token]
        return len(stale)

    def resize(self, max_entries: int, ttl: float) -> None:
        """Apply a reloaded cache config (call after clear())."""
        self._max = max_entries
        self.ttl = ttl

    def clear(self) -> None:
        self._entries.clear()
