"""Parse a JWS compact serialization (RFC 7515 §7.1) strictly, once, into typed parts.

Anything ambiguous is rejected rather than repaired: padding, whitespace,
non-base64url characters, non-canonical base64url, duplicate JSON members,
non-UTF-8, NaN/Infinity, deep nesting, unknown `crit` extensions and unencoded
payloads.  The size cap is checked before any decoding.  Keys are never taken
from the token: `jwk`, `jku`, `x5u` and `x5c` are left in the header and never read.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from gateway.jose.errors import Reason, TokenError

__all__ = [
    "MAX_JSON_DEPTH",
    "JwsParts",
    "ParsedToken",
    "b64decode_segment",
    "check_crit",
    "json_object",
    "match_compact",
    "parse_jws",
    "parse_token",
]

MAX_JSON_DEPTH: Final = 16

# Three base64url segments and nothing else: no '=', '+', '/', whitespace or
# non-ASCII can match, and the classes are disjoint from '.', so matching is
# linear.  An empty payload (RFC 7515 App. F detached content) is not
# supported.  The signature may be empty here only so that an unsecured
# "h.p." token is reported for its alg (ALG_NOT_ALLOWED) rather than as
# mere structure; an empty signature is rejected right after the header checks.
_COMPACT: Final = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")

# RFC 4648 §3.5: with 2 (or 3) characters in the last quantum, the final
# character's low 4 (or 2) bits are padding and must be zero, or several
# strings decode to the same bytes (a malleable token).
_CANONICAL_LAST: Final[dict[int, frozenset[str]]] = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}

# JOSE header parameters defined by RFC 7515 §4.1 / RFC 7516 §4.1: RFC 7515
# §4.1.11 forbids listing them in crit.
_REGISTERED_HEADER: Final = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip"}
)


@dataclass(frozen=True, slots=True)
class JwsParts:
    """A structurally valid, not yet verified, JWS."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes  # ASCII(BASE64URL(header) '.' BASE64URL(payload)), as received
    signature: bytes
    alg: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A JWS whose payload is a JSON object (a JWT claims set, RFC 7519 §7.2)."""

    jws: JwsParts
    claims: dict[str, Any]


class _Reject(Exception):
    """Internal: JSON that is valid to `json` but not to us."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    # RFC 7515 §4 / RFC 7519 §4: duplicate member names MUST be rejected (or the last
    # wins); two parsers taking different ones is a signature-bypass class, so reject.
    if len(obj) != len(pairs):
        raise _Reject("duplicate member")
    return obj


def _reject_constant(_: str) -> Any:
    # NaN, Infinity and -Infinity are not JSON (RFC 8259 §6).
    raise _Reject("non-finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    # 1e999 parses to inf: the same non-JSON value by another spelling.
    if not math.isfinite(value):
        raise _Reject("non-finite number")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs_hook, parse_constant=_reject_constant, parse_float=_finite_float, strict=True
)


def _too_deep(value: object) -> bool:
    # Walks containers only; claims sets are small, so this is a handful of steps.
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        # RFC 8259 §8.1: UTF-8 only; decoding here also refuses a BOM-less UTF-16 guess.
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError, _Reject) as exc:
        raise TokenError(Reason.MALFORMED, f"The token {what} is not strict UTF-8 JSON.") from exc
    if not isinstance(value, dict):
        raise TokenError(Reason.MALFORMED, f"The token {what} is not a JSON object.")
    # Depth cannot exceed the number of openers; counting them in C skips the walk
    # for typical claims sets.  Openers inside strings only over-count, which is safe.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _too_deep(value):
        raise TokenError(Reason.MALFORMED, f"The token {what} nests JSON too deeply.")
    return value


# base64url -> base64 (RFC 4648 §5 vs §4), for the C decoder without the stdlib's wrappers.
_FROM_URLSAFE: Final = str.maketrans("-_", "+/")


def b64decode_segment(segment: str, what: str) -> bytes:
    """Decode one segment already matched by a base64url-only pattern (JWS or JWE compact)."""
    rem = len(segment) % 4
    if rem == 1:
        raise TokenError(Reason.MALFORMED, f"The token {what} is not valid base64url.")
    if rem and segment[-1] not in _CANONICAL_LAST[rem]:
        raise TokenError(Reason.MALFORMED, f"The token {what} is not canonical base64url.")
    try:
        # The alphabet was checked by the caller's pattern, so the non-validating decoder is exact here.
        return binascii.a2b_base64(segment.translate(_FROM_URLSAFE) + "=" * (-rem % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - unreachable after the checks
        raise TokenError(Reason.MALFORMED, f"The token {what} is not valid base64url.") from exc


def check_crit(header: dict[str, Any]) -> None:
    if "crit" not in header:
        return
    crit = header["crit"]
    # RFC 7515 §4.1.11: a non-empty array of names, each present in the header and
    # none of them a name the JWS/JWA specs define.
    if (
        not isinstance(crit, list)
        or not crit
        or not all(isinstance(name, str) for name in crit)
        or len(set(crit)) != len(crit)
    ):
        raise TokenError(Reason.MALFORMED, "The token header's crit is not a non-empty array of distinct names.")
    for name in crit:
        if name in _REGISTERED_HEADER or name not in header:
            raise TokenError(Reason.MALFORMED, "The token header's crit names an invalid or absent parameter.")
    # We implement no extension, so every well-formed crit names one we do not understand.
    raise TokenError(Reason.UNSUPPORTED_CRIT, "The token requires a header extension this gateway does not support.")


def match_compact(token: str, pattern: re.Pattern[str], *, max_bytes: int, shape: str) -> re.Match[str]:
    """The size cap, then the segment pattern, before any decoding (JWS and JWE alike)."""
    if not isinstance(token, str):
        raise TokenError(Reason.MALFORMED, "The token is not a string.")
    # Characters <= octets, so this bounds the octet length before any work.
    if len(token) > max_bytes:
        raise TokenError(Reason.TOO_LARGE, "The token exceeds the size limit.")
    match = pattern.fullmatch(token)
    if match is None:
        raise TokenError(Reason.MALFORMED, f"The token is not a compact {shape}.")
    return match


def parse_jws(token: str, *, max_bytes: int = 8192) -> JwsParts:
    """Split and decode a compact JWS, enforcing the strict rules; raises `TokenError`."""
    match = match_compact(token, _COMPACT, max_bytes=max_bytes, shape="JWS of three base64url segments")
    header_b64, payload_b64, signature_b64 = match.groups()
    header, alg, kid = _header(header_b64)
    if not signature_b64:
        raise TokenError(Reason.MALFORMED, "The token has an empty signature.")
    payload = b64decode_segment(payload_b64, "payload")
    signature = b64decode_segment(signature_b64, "signature")
    # RFC 7515 §5.2 step 8: the signing input is the received octets, never re-serialized.
    signing_input = token[: match.end(2)].encode("ascii")
    return JwsParts(header, payload, signing_input, signature, alg, kid)


# Tokens signed with one key share one header segment, so its checked decoding is kept:
# a cache hit skips a base64 and a JSON decode. Bounded (cleared when full), so a flood of
# distinct headers costs what it cost before. The header dicts are shared: read-only.
_HEADER_CACHE: dict[str, tuple[dict[str, Any], str, str | None]] = {}
_HEADER_CACHE_MAX: Final = 256


def _header(header_b64: str) -> tuple[dict[str, Any], str, str | None]:
    """The JOSE header's JSON object, alg and kid, with every header rule checked."""
    cached = _HEADER_CACHE.get(header_b64)
    if cached is not None:
        return cached
    header = json_object(b64decode_segment(header_b64, "header"), "header")

    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError(Reason.MALFORMED, "The token header's alg is missing or not a string.")
    check_crit(header)
    if "b64" in header:
        # RFC 7797 §3: b64=false (unencoded payload) is an extension we do not
        # implement; anything but a boolean is malformed.
        b64 = header["b64"]
        if not isinstance(b64, bool):
            raise TokenError(Reason.MALFORMED, "The token header's b64 is not a boolean.")
        if not b64:
            raise TokenError(Reason.UNSUPPORTED_CRIT, "The token uses an unencoded payload, which is not supported.")
    # RFC 8725 §3.1 / §2.1: unsecured JWS is never accepted, whatever the casing.
    if alg.lower() == "none":
        raise TokenError(Reason.ALG_NOT_ALLOWED, "Unsecured tokens (alg none) are never accepted.")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise TokenError(Reason.MALFORMED, "The token header's kid is not a string.")
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[header_b64] = checked = (header, alg, kid)
    return checked


def parse_token(token: str, *, max_bytes: int = 8192) -> ParsedToken:
    """`parse_jws`, then require the payload to be a JSON object (RFC 7519 §7.2 step 10)."""
    jws = parse_jws(token, max_bytes=max_bytes)
    return ParsedToken(jws, json_object(jws.payload, "payload"))
