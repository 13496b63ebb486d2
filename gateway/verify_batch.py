"""Verify the tokens of requests that arrived together back to back, in one event-loop callback.

A signature check run alone, between one request's worth of interpreter and network-stack
work and the next, finds the crypto library's code and tables gone from the CPU caches: in
the gateway an RS256 check cost ~30 us and slowed the Python around it, against ~20 us in a
tight loop (bench/RESULTS.md, run E). So a request that needs a signature checked parks here;
the first one of an event-loop turn schedules one callback, which runs every parked check in
arrival order, then each request goes on. Under load the batch is the requests that became
ready in the same turn (10-15 with 32 busy connections). The caller parks a check only while
other requests are in progress: alone, a request would gain nothing and wait one loop turn.

Everything but the signature path stays on the request: the cache, issuer choice, JWE
decryption, and `gateway explain`'s traced checks, which run inline.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.jose.errors import TokenError
from gateway.jose.verifier import verify_token

if TYPE_CHECKING:
    from typing import TypeAlias

    from gateway.jose.jwk import Jwk, KeySet
    from gateway.jose.jws import ParsedToken
    from gateway.jose.verifier import VerifyPolicy

    Outcome: TypeAlias = Jwk | TokenError


# At most this many checks per callback (~1.5 ms of RS256, ~5 ms of ES256): the rest wait for
# the next turn, so a flood of thousands of connections does not hold the event loop, and
# with it reads, timeouts and other requests, for the whole flood at once.
MAX_BATCH = 64


class VerifyBatch:
    """The checks parked in this event-loop turn, and the callback that runs them."""

    __slots__ = ("_loop", "_parked")

    def __init__(self) -> None:
        self._parked: list[tuple[asyncio.Future[Outcome], ParsedToken, VerifyPolicy, KeySet, float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def verify(self, token: ParsedToken, policy: VerifyPolicy, keys: KeySet, now: float) -> asyncio.Future[Outcome]:
        """`verify_token(token, policy, keys, now)` in this turn's batch: a future of the key that verified
        the token, or of the TokenError refusing it (a value, not an exception set on the future: that
        costs more to deliver)."""
        loop = asyncio.get_running_loop()
        if not self._parked or self._loop is not loop:
            # The first check of the turn schedules the run. (A batch parked on another loop
            # can only be one that loop never ran: it was closed, and its requests with it.)
            self._parked = []
            self._loop = loop
            loop.call_soon(self._run)
        future: asyncio.Future[Outcome] = loop.create_future()
        self._parked.append((future, token, policy, keys, now))
        return future

    def _run(self) -> None:
        batch, self._parked = self._parked[:MAX_BATCH], self._parked[MAX_BATCH:]
        if self._parked:
            assert self._loop is not None
            self._loop.call_soon(self._run)  # the rest in the next turn, after what is waiting now
        for future, token, policy, keys, now in batch:
            if future.cancelled():
                continue  # the client went away: its token is no longer worth a signature check
            try:
                future.set_result(verify_token(token, policy, keys, now))
            except TokenError as refusal:
                future.set_result(refusal)
            except Exception as exc:  # verify_token raises only TokenError; a bug fails its request, not the batch
                future.set_exception(exc)
