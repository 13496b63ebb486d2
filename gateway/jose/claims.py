"""Check a verified JWT claims set against an issuer's policy at an injected time (RFC 7519 §4.1).

Pure and synchronous: `now` is passed in (epoch seconds), so tests pin time.
The registered time claims must be JSON numbers (RFC 7519 §2 NumericDate):
booleans and strings are malformed, never coerced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from gateway.jose.errors import Reason, TokenError
from gateway.jose.trace import CLAIMS, Trace

__all__ = ["ClaimPolicy", "check_claims"]

_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    """What an issuer's tokens must satisfy beyond the signature."""

    issuer: str
    audiences: frozenset[str] | None  # None: any audience (or none) is accepted
    clock_skew: float = 30
    require_expiration: bool = True
    max_lifetime: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ValueError("issuer must be a non-empty string")
        if self.audiences is not None and (
            not isinstance(self.audiences, frozenset) or not all(isinstance(a, str) for a in self.audiences)
        ):
            raise ValueError("audiences must be a frozenset of strings or None")
        if not math.isfinite(self.clock_skew) or self.clock_skew < 0:
            raise ValueError("clock_skew must be a finite, non-negative number of seconds")
        if self.max_lifetime is not None and (not math.isfinite(self.max_lifetime) or self.max_lifetime <= 0):
            raise ValueError("max_lifetime must be a finite, positive number of seconds")


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | float | None:
    value = claims.get(name, _ABSENT)
    if value is _ABSENT:
        return None
    # RFC 7519 §2: NumericDate is a JSON number. `type() in` excludes bool (an int subclass).
    # Python compares int and float exactly, so ints are kept as they are.
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise TokenError(Reason.MALFORMED, f"The '{name}' claim is not a number.")


def _at(t: float) -> str:
    """A NumericDate as the number and its UTC time, for trace details."""
    number = str(t) if isinstance(t, int) else f"{t:.3f}".rstrip("0").rstrip(".")
    try:
        return f"{number} ({datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ})"
    except (OverflowError, OSError, ValueError):
        return number


def _reject(trace: Trace | None, name: str, detail: str, reason: Reason, description: str) -> NoReturn:
    if trace is not None:
        trace.add(CLAIMS, name, False, f"{detail}: {description}")
    raise TokenError(reason, description)


def _accepted(audiences: frozenset[str] | None) -> str:
    return "any audience" if audiences is None else f"one of {sorted(audiences)}"


def _check_audience(claims: Mapping[str, Any], audiences: frozenset[str] | None, trace: Trace | None) -> None:
    aud = claims.get("aud", _ABSENT)
    if aud is _ABSENT:
        if audiences is not None:
            _reject(trace, "aud", f"absent, required: {_accepted(audiences)}", Reason.BAD_AUDIENCE, "The token has no audience.")
    # RFC 7519 §4.1.3: a string, or an array of strings.
    elif isinstance(aud, str):
        if audiences is not None and aud not in audiences:
            _reject(trace, "aud", f"{aud!r}, accepted: {_accepted(audiences)}", Reason.BAD_AUDIENCE,
                    "The token's audience is not accepted.")
    elif not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
        _reject(trace, "aud", "not a string or array of strings", Reason.MALFORMED,
                "The 'aud' claim is not a string or an array of strings.")
    elif audiences is not None and audiences.isdisjoint(aud):
        _reject(trace, "aud", f"{aud!r}, accepted: {_accepted(audiences)}", Reason.BAD_AUDIENCE,
                "None of the token's audiences is accepted.")
    if trace is not None:
        trace.add(CLAIMS, "aud", True, f"{'absent' if aud is _ABSENT else repr(aud)}, accepted: {_accepted(audiences)}")


def check_claims(claims: Mapping[str, Any], policy: ClaimPolicy, now: float, trace: Trace | None = None) -> None:
    """Raise `TokenError` unless `claims` satisfy `policy` at time `now`; record each check in `trace` if given."""
    # Types first, so a malformed time claim is reported as such whatever else fails.
    try:
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
    except TokenError as exc:
        _reject(trace, "exp, nbf, iat types", "NumericDate required (RFC 7519 §2)", exc.reason, exc.description)
    if trace is not None:
        trace.add(CLAIMS, "exp, nbf, iat types", True, "numbers or absent")

    # RFC 7519 §4.1.1: iss is a case-sensitive string; we compare exactly.
    iss = claims.get("iss", _ABSENT)
    if iss is not _ABSENT and not isinstance(iss, str):
        _reject(trace, "iss", "not a string", Reason.MALFORMED, "The 'iss' claim is not a string.")
    if iss != policy.issuer:
        _reject(trace, "iss", f"must equal {policy.issuer!r}", Reason.BAD_ISSUER, "The token's issuer is not the configured issuer.")
    if trace is not None:
        trace.add(CLAIMS, "iss", True, f"{iss!r} equals the configured issuer")

    _check_audience(claims, policy.audiences, trace)

    skew = policy.clock_skew
    if exp is None:
        if policy.require_expiration:
            _reject(trace, "exp", "absent, and require_expiration is on", Reason.MISSING_EXPIRATION,
                    "The token has no expiration time.")
        if policy.max_lifetime is not None:
            # A lifetime limit cannot hold for a token that never expires.
            _reject(trace, "exp", "absent, and max_lifetime is set", Reason.MISSING_EXPIRATION,
                    "A lifetime limit applies, so the token must expire.")
        if trace is not None:
            trace.add(CLAIMS, "exp", True, "absent, allowed (require_expiration: false)")
    # RFC 7519 §4.1.4: reject on or after exp, allowing the configured skew.
    elif exp <= now - skew:
        _reject(trace, "exp", f"{_at(exp)} <= now {_at(now)} - skew {skew:g}s", Reason.EXPIRED, "The token has expired.")
    elif trace is not None:
        trace.add(CLAIMS, "exp", True, f"{_at(exp)} > now {_at(now)} - skew {skew:g}s ({exp - now:.0f}s left)")
    # RFC 7519 §4.1.5: reject before nbf, allowing the skew.
    if nbf is not None and nbf > now + skew:
        _reject(trace, "nbf", f"{_at(nbf)} > now {_at(now)} + skew {skew:g}s", Reason.NOT_YET_VALID, "The token is not valid yet.")
    if trace is not None:
        trace.add(CLAIMS, "nbf", True, "absent" if nbf is None else f"{_at(nbf)} <= now {_at(now)} + skew {skew:g}s")
    # SPEC: an iat beyond the skew in the future is a token from the future.
    if iat is not None and iat > now + skew:
        _reject(trace, "iat", f"{_at(iat)} > now {_at(now)} + skew {skew:g}s", Reason.NOT_YET_VALID, "The token was issued in the future.")
    if trace is not None:
        trace.add(CLAIMS, "iat", True, "absent" if iat is None else f"{_at(iat)} <= now {_at(now)} + skew {skew:g}s")
    if policy.max_lifetime is not None and exp is not None:
        start = iat if iat is not None else now
        too_long = exp - start > policy.max_lifetime
        if too_long or trace is not None:
            lifetime = f"exp - {'iat' if iat is not None else 'now'} = {exp - start:g}s, max_lifetime {policy.max_lifetime:g}s"
            if too_long:
                _reject(trace, "lifetime", lifetime, Reason.LIFETIME_TOO_LONG, "The token's lifetime exceeds the configured maximum.")
            if trace is not None:
                trace.add(CLAIMS, "lifetime", True, lifetime)
