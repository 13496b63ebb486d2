"""DPoP state every worker of the process shares: the replay memory of proof `jti`s and the nonce key.

Both are made once, before the supervisor forks (server.workers > 1), so each
worker inherits the same memory and the same key:

- ReplayStore: a fixed table in one shared memory mapping (memfd, MAP_SHARED).
  A proof's (key thumbprint, jti) becomes an 8-byte keyed BLAKE2b tag, stored
  with the second it stops mattering (RFC 9449 §11.1: only the window in which
  the proof would be accepted). The table is split into buckets of 16 slots;
  a tag lives in one bucket, and a check-and-insert holds a POSIX record lock
  (fcntl) on that bucket's bytes only, so workers never see half an update and
  a worker that dies mid-update releases its lock with it. A bucket whose 16
  slots are all live refuses new proofs (FULL): fail closed, never forget one
  early. One process only: replicas do not share it.
- Nonces (RFC 9449 §8/§9): stateless, an HMAC of a time counter under the shared
  key, so a nonce from any worker is good on every worker. The counter advances
  every `period` (the issuer's max_age); the current and the previous counter
  are accepted, so a nonce lives between one and two periods.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import math
import mmap
import os
import struct
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

SLOTS_PER_BUCKET: Final = 16
_SLOT: Final = struct.Struct("<QI")  # tag, expiry (whole seconds, epoch); expiry 0 = empty
_BUCKET: Final = struct.Struct("<" + "QI" * SLOTS_PER_BUCKET)
BUCKET_BYTES: Final = _BUCKET.size
# 2**21 slots = 24 MiB of address space; pages are only backed once written to.
DEFAULT_SLOTS: Final = 1 << 21
_MAX_EXPIRY: Final = 2**32 - 1


class Replay(Enum):
    FRESH = "fresh"  # first sighting: now remembered
    REPLAYED = "replayed"  # seen before, still within its window
    FULL = "full"  # no room to remember it: refuse rather than forget


class ReplayStore:
    """A (thumbprint, jti) is accepted once per window, across every process that inherits this store."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self._buckets = max(1, slots // SLOTS_PER_BUCKET)
        size = self._buckets * BUCKET_BYTES
        self._fd = _anonymous_file()
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        weakref.finalize(self, os.close, self._fd)  # the lock descriptor lives as long as the store
        self._key = os.urandom(16)  # tags are unforgeable, so nobody can aim a collision at another's proof
        self._locking = False

    def share_with_forks(self) -> None:
        """Call before forking workers: from now on every update holds its bucket's record lock."""
        self._locking = True

    @property
    def capacity(self) -> int:
        return self._buckets * SLOTS_PER_BUCKET

    def check_and_add(self, jkt: str, jti: str, until: float, now: float) -> Replay:
        """Remember (jkt, jti) until `until` (epoch seconds) unless it is remembered already."""
        blake = hashlib.blake2b(jkt.encode() + b"\0" + jti.encode("utf-8", "surrogatepass"), key=self._key, digest_size=8)
        tag = int.from_bytes(blake.digest(), "little") or 1
        offset = (tag % self._buckets) * BUCKET_BYTES
        now_s = int(now)
        if self._locking:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, BUCKET_BYTES, offset)
        try:
            fields = _BUCKET.unpack_from(self._map, offset)
            free = -1
            for i in range(SLOTS_PER_BUCKET):
                if fields[2 * i + 1] <= now_s:  # empty or expired
                    if free < 0:
                        free = i
                elif fields[2 * i] == tag:
                    return Replay.REPLAYED
            if free < 0:
                return Replay.FULL
            expiry = min(math.ceil(until) + 1, _MAX_EXPIRY)
            _SLOT.pack_into(self._map, offset + free * _SLOT.size, tag, expiry)
            return Replay.FRESH
        finally:
            if self._locking:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, BUCKET_BYTES, offset)



def _anonymous_file() -> int:
    try:
        return os.memfd_create("gateway-dpop-replay", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # pragma: no cover - not Linux: an unlinked temporary file
        handle = tempfile.TemporaryFile()
        return os.dup(handle.fileno())


_NONCE_MAC_BYTES: Final = 16
_COUNTER_BYTES: Final = 6


class Nonce(Enum):
    CURRENT = "current"
    PREVIOUS = "previous"  # still accepted; the answer carries the current one (RFC 9449 §8.2)
    INVALID = "invalid"


class Nonces:
    """Server nonces: base64url(counter || HMAC-SHA256(key, period || counter)[:16])."""

    def __init__(self, key: bytes, clock: Callable[[], float]) -> None:
        self._key = key
        self._clock = clock

    def _mac(self, period_ms: int, counter: int) -> bytes:
        message = period_ms.to_bytes(8, "big") + counter.to_bytes(_COUNTER_BYTES, "big")
        return hmac.digest(self._key, message, "sha256")[:_NONCE_MAC_BYTES]

    def _counter(self, period: float) -> tuple[int, int]:
        period_ms = max(1, round(period * 1000))
        return period_ms, int(self._clock() * 1000) // period_ms

    def current(self, period: float) -> str:
        period_ms, counter = self._counter(period)
        raw = counter.to_bytes(_COUNTER_BYTES, "big") + self._mac(period_ms, counter)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str | None, period: float) -> Nonce:
        if nonce is None or len(nonce) != 30:  # 22 octets in base64url
            return Nonce.INVALID
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"==")
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return Nonce.INVALID
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != nonce.encode("ascii"):
            return Nonce.INVALID  # one spelling per nonce: no stray characters, no padding-bit variants
        counter = int.from_bytes(raw[:_COUNTER_BYTES], "big")
        period_ms, now_counter = self._counter(period)
        if counter not in (now_counter, now_counter - 1):
            return Nonce.INVALID
        if not hmac.compare_digest(raw[_COUNTER_BYTES:], self._mac(period_ms, counter)):
            return Nonce.INVALID
        return Nonce.CURRENT if counter == now_counter else Nonce.PREVIOUS


@dataclass(frozen=True, slots=True)
class DpopShared:
    """What one gateway process (all its workers) shares for DPoP; outlives config reloads."""

    replay: ReplayStore
    nonce_key: bytes

    @classmethod
    def create(cls, slots: int = DEFAULT_SLOTS) -> DpopShared:
        return cls(ReplayStore(slots), os.urandom(32))
