"""Check a verified JWT claims set against an issuer's policy at an injected time (RFC 7519 §4.1).

Pure and synchronous: `now` is passed in (epoch seconds), so tests pin time.
The registered time claims must be JSON numbers (RFC 7519 §2 NumericDate):
booleans and strings are malformed, never coerced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.jose.errors import Reason, TokenError

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


def _check_audience(claims: Mapping[str, Any], audiences: frozenset[str] | None) -> None:
    aud = claims.get("aud", _ABSENT)
    if aud is _ABSENT:
        if audiences is not None:
            raise TokenError(Reason.BAD_AUDIENCE, "The token has no audience.")
        return
    # RFC 7519 §4.1.3: a string, or an array of strings.
    if isinstance(aud, str):
        if audiences is not None and aud not in audiences:
            raise TokenError(Reason.BAD_AUDIENCE, "The token's audience is not accepted.")
        return
    if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
        raise TokenError(Reason.MALFORMED, "The 'aud' claim is not a string or an array of strings.")
    if audiences is not None and audiences.isdisjoint(aud):
        raise TokenError(Reason.BAD_AUDIENCE, "None of the token's audiences is accepted.")


def check_claims(claims: Mapping[str, Any], policy: ClaimPolicy, now: float) -> None:
    """Raise `TokenError` unless `claims` satisfy `policy` at time `now`."""
    # Types first, so a malformed time claim is reported as such whatever else fails.
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")

    # RFC 7519 §4.1.1: iss is a case-sensitive string; we compare exactly.
    iss = claims.get("iss", _ABSENT)
    if iss is not _ABSENT and not isinstance(iss, str):
        raise TokenError(Reason.MALFORMED, "The 'iss' claim is not a string.")
    if iss != policy.issuer:
        raise TokenError(Reason.BAD_ISSUER, "The token's issuer is not the configured issuer.")

    _check_audience(claims, policy.audiences)

    skew = policy.clock_skew
    if exp is None:
        if policy.require_expiration:
            raise TokenError(Reason.MISSING_EXPIRATION, "The token has no expiration time.")
        if policy.max_lifetime is not None:
            # A lifetime limit cannot hold for a token that never expires.
            raise TokenError(Reason.MISSING_EXPIRATION, "A lifetime limit applies, so the token must expire.")
    # RFC 7519 §4.1.4: reject on or after exp, allowing the configured skew.
    elif exp <= now - skew:
        raise TokenError(Reason.EXPIRED, "The token has expired.")
    # RFC 7519 §4.1.5: reject before nbf, allowing the skew.
    if nbf is not None and nbf > now + skew:
        raise TokenError(Reason.NOT_YET_VALID, "The token is not valid yet.")
    # SPEC: an iat beyond the skew in the future is a token from the future.
    if iat is not None and iat > now + skew:
        raise TokenError(Reason.NOT_YET_VALID, "The token was issued in the future.")
    if policy.max_lifetime is not None and exp is not None:
        start = iat if iat is not None else now
        if exp - start > policy.max_lifetime:
            raise TokenError(Reason.LIFETIME_TOO_LONG, "The token's lifetime exceeds the configured maximum.")
