"""Authentication: token string -> VerifiedToken for one route, through the cache, the key store and the verifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.cert_binding import check_certificate_binding
from gateway.dpop_binding import DpopRefusal
from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe import NestedJws, is_compact_jwe, parse_jwe
from gateway.jose.jws import parse_token
from gateway.jose.trace import DECODE, DECRYPTION, ISSUER, KEY, Trace
from gateway.jose.verifier import VerifyPolicy, verify_token
from gateway.token_cache import STABLE_REJECTIONS, Rejection, TokenCache, VerifiedToken
from gateway.verify_batch import VerifyBatch

if TYPE_CHECKING:
    from gateway.decryption_keys import DecryptionKeyStore
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
    require_encryption: bool = False  # a plain JWS from this issuer is refused (SPEC Part 2)


@dataclass(frozen=True, slots=True)
class IssuerTable:
    """Issuers by the exact `iss` string tokens carry, and by config name."""

    by_iss: dict[str, IssuerRuntime]
    by_name: dict[str, IssuerRuntime]


def _no_certificate() -> str | None:
    return None


def _alone() -> bool:
    return False  # without a server around it (tools, benches of the verifier): every check inline


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Authenticator:
    """Verifies tokens for the request path; owns the verified-token cache across reloads."""

    def __init__(
        self, cache: TokenCache, metrics: Metrics, clock: Callable[[], float] = time.time,
        others_in_flight: Callable[[], bool] = _alone,
    ) -> None:
        self.cache = cache
        self._metrics = metrics
        self._clock = clock
        # Signature checks of one event-loop turn run back to back (gateway/verify_batch.py), when
        # other requests are in progress; a request alone is checked at once.
        self._batch = VerifyBatch()
        self._others_in_flight = others_in_flight

    async def authenticate(
        self,
        token: str,
        route: Route,
        issuers: IssuerTable,
        max_token_bytes: int,
        trace: Trace | None = None,
        *,
        decryption: DecryptionKeyStore | None = None,
        client_certificate: Callable[[], str | None] = _no_certificate,
        dpop_binding: Callable[[VerifiedToken], None] | None = None,
    ) -> VerifiedToken:
        """Return the verified token, or raise TokenError with the reason it is refused.

        A five-segment token is a JWE: it is decrypted first (the time counts as verification
        time) and the compact JWS inside is then verified exactly as a plain token.
        With a `trace` (gateway explain), every check is recorded and the cache is neither read nor filled.
        `client_certificate` gives the thumbprint of the certificate the client proved it
        holds (asked only for a certificate-bound token). `dpop_binding` is the DPoP binding
        step for this request (RFC 9449); it raises DpopRefusal, whose result label is recorded.
        """
        started = time.perf_counter()
        issuer_label = UNKNOWN_ISSUER  # also while a JWE is still encrypted: its issuer is inside
        encrypted = is_compact_jwe(token)
        now = self._clock()
        cached = self.cache.get(token, now) if trace is None else None
        try:
            if cached is not None:
                self._metrics.count_cache_hit(1)
                issuer_label = cached.issuer_name
                if isinstance(cached, Rejection):
                    raise TokenError(cached.reason, cached.description)
                _check_cached(cached, route, issuers, now)
                entry = cached
            else:
                self._metrics.count_cache_miss(1)
                nested = _decrypt(token, decryption, max_token_bytes, trace) if encrypted else None
                jws = token if nested is None else nested.jws
                try:
                    parsed = parse_token(jws, max_bytes=max_token_bytes)
                except TokenError as exc:
                    if trace is not None:
                        trace.add(DECODE, "compact JWS", False, exc.description)
                    raise
                if trace is not None:
                    trace.add(DECODE, "compact JWS", True, f"{len(jws)} bytes, at most {max_token_bytes}")
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
                if issuer.require_encryption and nested is None:
                    if trace is not None:
                        trace.add(DECRYPTION, "require_encryption", False, f"issuer {issuer.name} accepts only JWE tokens")
                    raise TokenError(Reason.ENCRYPTION_REQUIRED, "the issuer's tokens must be encrypted")
                keys = issuer.keys.keys
                if keys is None:
                    if trace is not None:
                        trace.add(KEY, "key set", False, f"issuer {issuer.name} has no keys (its source has not loaded)")
                    raise TokenError(Reason.JWKS_UNAVAILABLE, "the issuer has no keys yet")
                try:
                    if trace is None and self._others_in_flight():
                        outcome = await self._batch.verify(parsed, issuer.policy, keys, now)
                        if isinstance(outcome, TokenError):
                            raise outcome
                        key = outcome
                    else:
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
                    encrypted=encrypted,
                    payload_b64=None if nested is None else nested.jws.split(".", 2)[1],
                )
                if trace is None:
                    self.cache.put(token, entry)
            # Sender constraint: the binding is to this connection, so it is checked on every
            # request, cached token or not (RFC 8705 §3).
            check_certificate_binding(entry.claims, client_certificate, trace)
            if dpop_binding is not None:
                dpop_binding(entry)
        except DpopRefusal as refusal:
            self._metrics.verify_histogram(issuer_label, refusal.result).observe(time.perf_counter() - started)
            raise
        except TokenError as exc:
            if exc.reason in STABLE_REJECTIONS and cached is None and trace is None and self.cache.enabled:
                self.cache.put(
                    token, Rejection(issuer_label, exc.reason, exc.description, now + self.cache.ttl, encrypted)
                )
            self._metrics.verify_histogram(issuer_label, exc.reason).observe(time.perf_counter() - started)
            raise
        self._metrics.verify_histogram(issuer_label, "ok").observe(time.perf_counter() - started)
        return entry


def _decrypt(
    token: str, decryption: DecryptionKeyStore | None, max_token_bytes: int, trace: Trace | None
) -> NestedJws:
    """The JWS inside a JWE; without a `decryption` block every JWE is refused (after its structure)."""
    try:
        if decryption is None:
            parse_jwe(token, max_bytes=max_token_bytes)  # a structural fault is still `malformed`
            raise TokenError(Reason.DECRYPT_FAILED, DECRYPT_FAILED_DESCRIPTION)
        nested = decryption.unwrap(token, max_bytes=max_token_bytes)
    except TokenError as exc:
        if trace is not None:
            why = "no decryption block: every JWE is refused" if decryption is None else exc.description
            trace.add(DECRYPTION, "compact JWE", False, f"{exc.reason.value}: {why}")
        raise
    if trace is not None:
        h = nested.header
        trace.add(
            DECRYPTION, "compact JWE", True,
            f"alg {h.get('alg')}, enc {h.get('enc')}, cty {h.get('cty')}, key {nested.key.kid or '(no kid)'} "
            f"({nested.key.kty}); a compact JWS inside",
        )
    return nested


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
