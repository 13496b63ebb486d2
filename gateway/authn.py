"""Authentication: token string -> VerifiedToken for one route, through the cache, the key store and the verifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.jose.errors import Reason, TokenError
from gateway.jose.jws import parse_token
from gateway.jose.trace import DECODE, ISSUER, KEY, Trace
from gateway.jose.verifier import VerifyPolicy, verify_token
from gateway.token_cache import STABLE_REJECTIONS, Rejection, TokenCache, VerifiedToken

if TYPE_CHECKING:
    from gateway.keystore import IssuerKeys
    from gateway.metrics import Metrics
    from gateway.routing import Route

UNKNOWN_ISSUER = "unknown"  # metric label when the token names no configured issuer


@dataclass(frozen=True, slots=True)
class IssuerRuntime:
    """One configured issuer, compiled: its verification policy and its live key set."""

    name: str
    iss: str
    policy: VerifyPolicy
    keys: IssuerKeys


@dataclass(frozen=True, slots=True)
class IssuerTable:
    """Issuers by the exact `iss` string tokens carry, and by config name."""

    by_iss: dict[str, IssuerRuntime]
    by_name: dict[str, IssuerRuntime]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Authenticator:
    """Verifies tokens for the request path; owns the verified-token cache across reloads."""

    def __init__(self, cache: TokenCache, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self._metrics = metrics
        self._clock = clock

    async def authenticate(
        self, token: str, route: Route, issuers: IssuerTable, max_token_bytes: int, trace: Trace | None = None
    ) -> VerifiedToken:
        """Return the verified token, or raise TokenError with the reason it is refused.

        With a `trace` (gateway explain), every check is recorded and the cache is neither read nor filled.
        """
        started = time.perf_counter()
        issuer_label = UNKNOWN_ISSUER
        now = self._clock()
        cached = self.cache.get(token, now) if trace is None else None
        try:
            if cached is not None:
                self._metrics.cache_hit.inc()
                issuer_label = cached.issuer_name
                if isinstance(cached, Rejection):
                    raise TokenError(cached.reason, cached.description)
                _check_cached(cached, route, issuers, now)
                entry = cached
            else:
                self._metrics.cache_miss.inc()
                try:
                    parsed = parse_token(token, max_bytes=max_token_bytes)
                except TokenError as exc:
                    if trace is not None:
                        trace.add(DECODE, "compact JWS", False, exc.description)
                    raise
                if trace is not None:
                    trace.add(DECODE, "compact JWS", True, f"{len(token)} bytes, at most {max_token_bytes}")
                iss = parsed.claims.get("iss")
                issuer = issuers.by_iss.get(iss) if isinstance(iss, str) else None
                if trace is not None:
                    _trace_issuers(trace, iss, issuer, issuers)
                if issuer is None:
                    raise TokenError(Reason.BAD_ISSUER, "the token's issuer is not configured")
                issuer_label = issuer.name
                if route.issuer_names is not None and issuer.name not in route.issuer_names:
                    if trace is not None:
                        trace.add(ISSUER, "route's issuers", False, f"{issuer.name} not in {sorted(route.issuer_names)}")
                    raise TokenError(Reason.BAD_ISSUER, "the token's issuer is not accepted on this route")
                keys = issuer.keys.keys
                if keys is None:
                    if trace is not None:
                        trace.add(KEY, "key set", False, f"issuer {issuer.name} has no keys (its source has not loaded)")
                    raise TokenError(Reason.JWKS_UNAVAILABLE, "the issuer has no keys yet")
                try:
                    key = verify_token(parsed, issuer.policy, keys, now, trace)
                except TokenError as exc:
                    if exc.reason is not Reason.UNKNOWN_KEY:
                        raise
                    # A kid we have not seen: the issuer may have rotated. Refetch (single-flight,
                    # rate-limited by the key store) and try once more.
                    fresh = await issuer.keys.refetch_unknown_kid()
                    if trace is not None:
                        changed = fresh is not None and fresh is not keys
                        trace.add(KEY, "refetch for an unknown kid", changed or None, "a new key set" if changed else "no new keys")
                    if fresh is None or fresh is keys:
                        raise
                    key = verify_token(parsed, issuer.policy, fresh, self._clock(), trace)
                claims = parsed.claims
                exp = _number(claims.get("exp"))
                cache_until = now + self.cache.ttl if exp is None else min(exp, now + self.cache.ttl)
                entry = VerifiedToken(
                    issuer_name=issuer.name,
                    claims=claims,
                    key=key,
                    exp=exp,
                    nbf=_number(claims.get("nbf")),
                    cache_until=cache_until,
                )
                if trace is None:
                    self.cache.put(token, entry)
        except TokenError as exc:
            if exc.reason in STABLE_REJECTIONS and cached is None and trace is None:
                self.cache.put(
                    token, Rejection(issuer_label, exc.reason, exc.description, now + self.cache.ttl)
                )
            self._metrics.verify_histogram(issuer_label, exc.reason.value).observe(time.perf_counter() - started)
            raise
        self._metrics.verify_histogram(issuer_label, "ok").observe(time.perf_counter() - started)
        return entry


def _trace_issuers(trace: Trace, iss: object, chosen: IssuerRuntime | None, issuers: IssuerTable) -> None:
    """Which configured issuer the token's iss picks, and why each other one is not it."""
    for candidate in issuers.by_name.values():
        if candidate is chosen:
            trace.add(ISSUER, candidate.name, True, f"iss {iss!r} is this issuer's")
        else:
            trace.add(ISSUER, candidate.name, None, f"not this token's: expects iss {candidate.iss!r}")
    if chosen is None:
        trace.add(ISSUER, "iss", False, f"{iss!r} names no configured issuer")


def _check_cached(entry: VerifiedToken, route: Route, issuers: IssuerTable, now: float) -> None:
    """Time claims and the route's issuer restriction hold on every request, cached or not."""
    if route.issuer_names is not None and entry.issuer_name not in route.issuer_names:
        raise TokenError(Reason.BAD_ISSUER, "the token's issuer is not accepted on this route")
    skew = issuers.by_name[entry.issuer_name].policy.claims.clock_skew  # the cache is cleared on reload
    if entry.exp is not None and now - skew >= entry.exp:
        raise TokenError(Reason.EXPIRED, "the token has expired")
    if entry.nbf is not None and entry.nbf > now + skew:
        raise TokenError(Reason.NOT_YET_VALID, "the token is not valid yet")
