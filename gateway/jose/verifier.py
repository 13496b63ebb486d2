"""Verify a parsed token against an issuer's policy and key set, in one fixed order.

Order (each step a single call down): alg allow-list (RFC 8725 §3.1) -> `typ`
(RFC 8725 §3.11) -> key selection by kid/alg -> signature -> claims.  The only
exception that leaves this module is `TokenError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.jose.algorithms import SUPPORTED, verify_signature
from gateway.jose.claims import ClaimPolicy, check_claims
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import Jwk, KeySet
from gateway.jose.jws import JwsParts, ParsedToken, parse_token
from gateway.jose.trace import KEY, SIGNATURE, Trace

__all__ = ["VerifyPolicy", "check_typ", "verify_compact", "verify_jws_signature", "verify_token"]

_MEDIA_PREFIX: Final = "application/"


def _normalize_typ(typ: str) -> str:
    # RFC 7515 §4.1.9: media types compare case-insensitively, and a value without
    # '/' means "application/" + value, so drop that prefix before comparing.
    lowered = typ.lower()
    if lowered.startswith(_MEDIA_PREFIX):
        rest = lowered[len(_MEDIA_PREFIX) :]
        if "/" not in rest:
            return rest
    return lowered


def _check_typ_normalized(header: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if "typ" not in header:
        return
    typ = header["typ"]
    if not isinstance(typ, str):
        raise TokenError(Reason.MALFORMED, "The token header's typ is not a string.")
    if _normalize_typ(typ) not in allowed:
        raise TokenError(Reason.BAD_TYPE, "The token's typ is not accepted.")


def check_typ(header: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Accept an absent `typ` or one of `allowed` (case-insensitive, "application/" optional)."""
    _check_typ_normalized(header, frozenset(_normalize_typ(t) for t in allowed))


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """An issuer's verification policy, validated and precomputed at load."""

    algorithms: frozenset[str]
    claims: ClaimPolicy
    typ: tuple[str, ...] = ("JWT", "at+jwt")
    _typ_normalized: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("at least one algorithm must be allowed")
        unknown = self.algorithms - SUPPORTED
        if unknown:
            # Also refuses "none" in any casing: it is not in SUPPORTED.
            raise ValueError(f"unsupported algorithms: {', '.join(sorted(unknown))}")
        if not isinstance(self.typ, tuple) or not all(isinstance(t, str) and t for t in self.typ):
            raise ValueError("typ must be a tuple of non-empty strings")
        object.__setattr__(self, "_typ_normalized", frozenset(_normalize_typ(t) for t in self.typ))


def _describe(key: Jwk) -> str:
    return f"kid {key.kid!r} ({key.kty}{' ' + key.crv if key.crv else ''}, alg {key.alg or 'any fitting'})"


def verify_jws_signature(jws: JwsParts, keys: KeySet, trace: Trace | None = None) -> Jwk:
    """The key of `keys` that verifies `jws` (chosen by kid and alg, no fallback), or raise `TokenError`.

    The allow-list is the caller's to check first (RFC 8725 §3.1).
    """
    try:
        candidates = keys.select(jws.alg, jws.kid)
    except TokenError as exc:
        if trace is not None:
            wanted = f"kid {jws.kid!r}" if jws.kid is not None else "no kid"
            trace.add(KEY, "key selection", False, f"{wanted}, alg {jws.alg}; the set has kids {list(keys.kids)}: {exc.description}")
        raise
    if trace is not None:
        trace.add(KEY, "key selection", True, f"{len(candidates)} candidate(s): {', '.join(_describe(k) for k in candidates)}")
    for key in candidates:
        if verify_signature(jws.alg, key, jws.signing_input, jws.signature):
            if trace is not None:
                trace.add(SIGNATURE, "signature", True, f"verifies with {_describe(key)}")
            return key
    if trace is not None:
        trace.add(SIGNATURE, "signature", False, f"no candidate verifies it ({len(candidates)} tried)")
    raise TokenError(Reason.BAD_SIGNATURE, "The token's signature does not verify.")


def verify_token(token: ParsedToken, policy: VerifyPolicy, keys: KeySet, now: float, trace: Trace | None = None) -> Jwk:
    """Return the key that verified `token`, or raise `TokenError`; record each check in `trace` if given."""
    try:
        jws = token.jws
        alg = jws.alg
        # RFC 8725 §3.1: the allow-list is checked before any key is touched.
        allowed = alg in policy.algorithms
        if trace is not None:
            trace.add(KEY, "alg allow-list", allowed, f"{alg} {'in' if allowed else 'not in'} {sorted(policy.algorithms)}")
        if not allowed:
            raise TokenError(Reason.ALG_NOT_ALLOWED, "The token's algorithm is not allowed for this issuer.")
        try:
            _check_typ_normalized(jws.header, policy._typ_normalized)
        except TokenError as exc:
            if trace is not None:
                trace.add(KEY, "typ", False, f"{jws.header.get('typ')!r}, accepted: {list(policy.typ)}: {exc.description}")
            raise
        if trace is not None:
            trace.add(KEY, "typ", True, f"{jws.header.get('typ', 'absent')!r}, accepted: absent or {list(policy.typ)}")
        key = verify_jws_signature(jws, keys, trace)
        check_claims(token.claims, policy.claims, now, trace)
        return key
    except TokenError:
        raise
    except Exception as exc:  # pragma: no cover - last resort; every step above is total by design
        raise TokenError(Reason.MALFORMED, "The token could not be verified.") from exc


def verify_compact(
    token: str, policy: VerifyPolicy, keys: KeySet, now: float, *, max_bytes: int = 8192
) -> tuple[ParsedToken, Jwk]:
    """Parse then verify a compact token: the parsed token and the key that verified it."""
    try:
        parsed = parse_token(token, max_bytes=max_bytes)
    except TokenError:
        raise
    except Exception as exc:  # pragma: no cover - last resort; parsing is total by design
        raise TokenError(Reason.MALFORMED, "The token could not be parsed.") from exc
    return parsed, verify_token(parsed, policy, keys, now)
