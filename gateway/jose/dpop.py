"""Check a DPoP proof (RFC 9449 §4.3) against the request it came with, and read a token's `cnf.jkt`.

Pure and synchronous: the time, the request's external URI and the path
normalization are passed in. The signature goes through the same
`verify_signature` every token does, with the key from the proof's `jwk`
header: the one place a key is taken from a JWS, and only a public,
asymmetric one that fits an allowed `alg`. Replay (`jti`) and server nonces
are state, so they live outside this module; `check_proof` returns what they need.

Order (each step its own reason): structure (§4.3 step 2) -> `typ` (4) ->
`alg` (5) -> `jwk` public (7) and usable -> signature (6) -> required claims (3)
-> `htm` (8) -> `htu` (9) -> `iat` window (11) -> `ath` (12).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from gateway.jose.algorithms import SUPPORTED, spec_for, verify_signature
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import Jwk, JwkError, parse_jwk
from gateway.jose.jws import parse_token
from gateway.jose.verifier import check_typ

__all__ = [
    "ASYMMETRIC",
    "DpopError",
    "DpopPolicy",
    "DpopProof",
    "DpopReason",
    "ExternalUri",
    "ProofKeys",
    "access_token_hash",
    "check_proof",
    "confirmation_jkt",
    "jwk_thumbprint",
    "origin_of",
]

# RFC 9449 §4.2: "MUST NOT be none or an identifier for a symmetric algorithm".
ASYMMETRIC: Final = frozenset(a for a in SUPPORTED if not a.startswith("HS"))
# RFC 9449 §11.1: refuse "unnecessarily large jti values"; 96 bits of randomness need 16 characters.
MAX_JTI_CHARS: Final = 256
# RFC 7638 §3.2: the required members of each key type, in the thumbprint's (lexicographic) order.
_THUMBPRINT_MEMBERS: Final = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
# An absolute http(s) URI without userinfo: scheme, authority, path; query and fragment ignored (§4.2 htu).
_HTTP_URI: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#@\s]+)([^?#\s]*)(?:\?[^#\s]*)?(?:#\S*)?")
# host, or [IPv6], then an optional :port (RFC 3986 §3.2.2, §3.2.3).
_AUTHORITY: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/?#@\s]+)(?::([0-9]*))?")


class DpopReason(StrEnum):
    """Why a proof is refused: the log reason (the metric label is the coarser dpop_invalid)."""

    MALFORMED = "dpop_malformed"  # not one compact JWS of JSON objects, or a claim of the wrong type
    TOO_LARGE = "dpop_too_large"
    BAD_TYPE = "dpop_bad_typ"  # typ is not dpop+jwt (§4.3 step 4, §11.5)
    ALG_NOT_ALLOWED = "dpop_alg_not_allowed"  # none, symmetric, or not in the issuer's proof algorithms
    UNSUPPORTED_CRIT = "dpop_unsupported_crit"
    PRIVATE_KEY = "dpop_private_key"  # the jwk carries private members (§4.3 step 7)
    BAD_KEY = "dpop_bad_key"  # no jwk, or one we refuse (size, curve, type) or that does not fit alg
    BAD_SIGNATURE = "dpop_bad_signature"
    MISSING_CLAIM = "dpop_missing_claim"  # jti, htm, htu, iat or ath absent (§4.3 step 3)
    BAD_HTM = "dpop_bad_htm"
    BAD_HTU = "dpop_bad_htu"
    STALE = "dpop_stale"  # iat older than max_age + skew
    FUTURE = "dpop_future"  # iat more than skew ahead
    BAD_ATH = "dpop_bad_ath"


class DpopError(Exception):
    """A refused proof: `reason` for logs, `description` a safe sentence without any proof value."""

    __slots__ = ("description", "reason")

    def __init__(self, reason: DpopReason, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True)
class DpopPolicy:
    """An issuer's proof rules, validated at load."""

    algorithms: frozenset[str]
    max_age: float  # how far into the past iat may lie, before the skew
    clock_skew: float

    def __post_init__(self) -> None:
        if not self.algorithms or not self.algorithms <= ASYMMETRIC:
            raise ValueError("proof algorithms must be a non-empty set of asymmetric algorithms")
        if not (math.isfinite(self.max_age) and self.max_age > 0 and math.isfinite(self.clock_skew) and self.clock_skew >= 0):
            raise ValueError("max_age must be positive and clock_skew non-negative")


@dataclass(frozen=True, slots=True)
class ExternalUri:
    """The request's URI as the client addressed it: lower-case scheme and authority without a
    default port, and the path after the gateway's normalization."""

    scheme: str
    authority: str
    path: str


@dataclass(frozen=True, slots=True)
class DpopProof:
    """A proof that passed every stateless check: what replay and nonce checks need."""

    jkt: str  # RFC 7638 thumbprint of the proof's key
    jti: str
    iat: float
    nonce: str | None  # None when absent; a non-string nonce is malformed


class ProofKeys:
    """Proof keys already decoded, by their exact JWK members: a client signs every request with
    the same key, so its point decoding and thumbprint are done once. Bounded; oldest out first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[tuple[tuple[str, str], ...], tuple[Jwk, str]] = {}
        self._max = max_entries

    def get(self, jwk: dict[str, Any]) -> tuple[Jwk, str]:
        """The key and its RFC 7638 thumbprint; JwkError when the JWK is refused."""
        try:
            # Every member as given (alg/use restrict what the key may verify), when all are strings.
            cache_key: tuple[tuple[str, str], ...] | None = tuple(sorted(jwk.items()))
            hash(cache_key)
        except TypeError:
            cache_key = None  # a list (key_ops) or object member: decode without caching
        if cache_key is not None and (hit := self._entries.get(cache_key)) is not None:
            return hit
        entry = (parse_jwk(jwk), jwk_thumbprint(jwk))
        if cache_key is not None:
            if len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
            self._entries[cache_key] = entry
        return entry


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url SHA-256 of the ASCII access token."""
    return _b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3 SHA-256 thumbprint of an RSA, EC or OKP public JWK, over its required members
    as given; JwkError when one is missing or not a string."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise JwkError("the key type has no thumbprint here")
    required = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise JwkError(f"the '{name}' member is missing or not a string")
        required[name] = value
    # §3.3: no whitespace, members in lexicographic order, UTF-8.
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def origin_of(scheme: str, authority: str) -> tuple[str, str] | None:
    """Scheme and authority compared case-insensitively, with the scheme's default port dropped
    (RFC 3986 §6.2.2.1, §6.2.3); None when the authority is not host[:port]."""
    scheme = scheme.lower()
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        return None
    host, port = match.group(1).lower(), match.group(2)
    if port is None or port == "" or port.lstrip("0") == _DEFAULT_PORTS.get(scheme, "").lstrip("0"):
        return scheme, host
    return scheme, f"{host}:{int(port)}"


def _htu_matches(htu: str, expected: ExternalUri, normalize_path: Callable[[str], str]) -> bool:
    match = _HTTP_URI.fullmatch(htu)
    if match is None:
        return False
    origin = origin_of(match.group(1), match.group(2))
    if origin != (expected.scheme, expected.authority):
        return False
    try:
        # §4.3: syntax-based normalization before comparing; ours is the gateway's one path spelling.
        return normalize_path(match.group(3) or "/") == expected.path
    except ValueError:
        return False


def confirmation_jkt(claims: Mapping[str, Any]) -> str | None:
    """The token's `cnf.jkt` (RFC 9449 §6.1), None when it has none; TokenError (the token's own
    fault, not the proof's) when `cnf` is malformed."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise TokenError(Reason.MALFORMED, "The 'cnf' claim is not an object.")
    jkt = cnf.get("jkt")
    if jkt is None:
        return None
    if not isinstance(jkt, str) or not jkt:
        raise TokenError(Reason.MALFORMED, "The 'cnf.jkt' member is not a string.")
    return jkt


_TOKEN_TO_DPOP: Final = {
    Reason.TOO_LARGE: (DpopReason.TOO_LARGE, "The DPoP proof exceeds the size limit."),
    Reason.ALG_NOT_ALLOWED: (DpopReason.ALG_NOT_ALLOWED, "The DPoP proof's algorithm is not allowed."),
    Reason.UNSUPPORTED_CRIT: (DpopReason.UNSUPPORTED_CRIT, "The DPoP proof requires an unsupported extension."),
}


def _claim(claims: dict[str, Any], name: str) -> Any:
    if name not in claims:
        raise DpopError(DpopReason.MISSING_CLAIM, f"The DPoP proof has no '{name}' claim.")
    return claims[name]


def _string_claim(claims: dict[str, Any], name: str, limit: int = 8192) -> str:
    value = _claim(claims, name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise DpopError(DpopReason.MALFORMED, f"The DPoP proof's '{name}' claim is not a usable string.")
    return value


def check_proof(
    proof: str,
    policy: DpopPolicy,
    *,
    method: str,
    uri: ExternalUri,
    access_token: str | None,
    now: float,
    normalize_path: Callable[[str], str],
    max_bytes: int = 8192,
    keys: ProofKeys | None = None,
) -> DpopProof:
    """Run the stateless checks of RFC 9449 §4.3 on one `DPoP` header value; raise DpopError on the first fault."""
    # Step 2: one well-formed JWT (strict compact JWS, JSON objects, no duplicate members, crit refused).
    try:
        parsed = parse_token(proof, max_bytes=max_bytes)
    except TokenError as exc:
        reason, description = _TOKEN_TO_DPOP.get(
            exc.reason, (DpopReason.MALFORMED, "The DPoP proof is not a well-formed JWT.")
        )
        raise DpopError(reason, description) from exc
    header, claims, jws = parsed.jws.header, parsed.claims, parsed.jws

    # Step 4: explicit typing (RFC 8725 §3.11; RFC 9449 §11.5: no JWT made for another purpose).
    if "typ" not in header:
        raise DpopError(DpopReason.BAD_TYPE, "The DPoP proof has no typ header.")
    try:
        check_typ(header, ("dpop+jwt",))
    except TokenError as exc:
        raise DpopError(DpopReason.BAD_TYPE, "The DPoP proof's typ is not dpop+jwt.") from exc

    # Step 5: a registered asymmetric algorithm we implement and the issuer allows.
    if jws.alg not in policy.algorithms or spec_for(jws.alg) is None:
        raise DpopError(DpopReason.ALG_NOT_ALLOWED, "The DPoP proof's algorithm is not allowed.")

    # Step 7 before the key is used: a public key only, never a private or symmetric one.
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DpopError(DpopReason.BAD_KEY, "The DPoP proof has no jwk header object.")
    if not _PRIVATE_MEMBERS.isdisjoint(jwk):
        raise DpopError(DpopReason.PRIVATE_KEY, "The DPoP proof's jwk carries private key members.")
    try:
        # The key-size and curve rules every issuer key obeys.
        key, jkt = keys.get(jwk) if keys is not None else (parse_jwk(jwk), jwk_thumbprint(jwk))
    except JwkError as exc:
        raise DpopError(DpopReason.BAD_KEY, "The DPoP proof's jwk is not an acceptable public key.") from exc
    if not key.fits(jws.alg):
        raise DpopError(DpopReason.BAD_KEY, "The DPoP proof's jwk does not fit its algorithm.")

    # Step 6: the one signature check (RFC 7515 §5.2 over the received octets).
    if not verify_signature(jws.alg, key, jws.signing_input, jws.signature):
        raise DpopError(DpopReason.BAD_SIGNATURE, "The DPoP proof's signature does not verify.")

    # Step 3: the claims §4.2 requires for a proof sent with an access token.
    jti = _string_claim(claims, "jti", MAX_JTI_CHARS)
    htm = _string_claim(claims, "htm")
    htu = _string_claim(claims, "htu")
    iat = _claim(claims, "iat")
    if type(iat) not in (int, float) or not math.isfinite(iat):
        raise DpopError(DpopReason.MALFORMED, "The DPoP proof's 'iat' claim is not a number.")
    # `ath` is required with an access token (§4.2, §7); a token endpoint's proofs carry none.
    ath = _string_claim(claims, "ath") if access_token is not None else None
    nonce = claims.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or not nonce):
        raise DpopError(DpopReason.MALFORMED, "The DPoP proof's 'nonce' claim is not a string.")

    # Step 8: the method, case-sensitive (RFC 9110 §9.1).
    if htm != method:
        raise DpopError(DpopReason.BAD_HTM, "The DPoP proof's htm does not match the request method.")
    # Step 9: the target URI without query and fragment.
    if not _htu_matches(htu, uri, normalize_path):
        raise DpopError(DpopReason.BAD_HTU, "The DPoP proof's htu does not match the request URI.")
    # Step 11: created within the window (§11.1).
    if iat < now - policy.max_age - policy.clock_skew:
        raise DpopError(DpopReason.STALE, "The DPoP proof is too old.")
    if iat > now + policy.clock_skew:
        raise DpopError(DpopReason.FUTURE, "The DPoP proof was created in the future.")
    # Step 12, first half: bound to this access token (§7). The key binding is the caller's, with cnf.jkt.
    if access_token is not None and ath != access_token_hash(access_token):
        raise DpopError(DpopReason.BAD_ATH, "The DPoP proof's ath does not match the access token.")
    return DpopProof(jkt=jkt, jti=jti, iat=float(iat), nonce=nonce)
