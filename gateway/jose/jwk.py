"""Turn JWKs (RFC 7517) into verification keys once, at load, and pick candidates per token.

A `Jwk` holds a ready `cryptography` public key (or HMAC secret bytes) and the
precomputed set of `alg` values it may verify, so the request path never
re-decodes key material.  `KeySet` indexes keys by `kid` and by `alg` at
construction; `select` applies the SPEC's rule that a `kid` naming a key unfit
for the token's `alg` rejects the token rather than falling back.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.jose.algorithms import (
    MAX_RSA_BITS,
    MIN_HMAC_BYTES,
    MIN_RSA_BITS,
    algs_for_ec,
    algs_for_hmac,
    algs_for_okp,
    algs_for_rsa,
)
from gateway.jose.errors import Reason, TokenError

__all__ = [
    "EC_CURVES",
    "PRIVATE_MEMBERS",
    "Jwk",
    "JwkError",
    "KeySet",
    "PublicKey",
    "b64_member",
    "has_roca_fingerprint",
    "hmac_key",
    "key_ops_member",
    "opt_str_member",
    "parse_jwk",
    "parse_jwk_set",
]

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | bytes
)

# RFC 7517 §4.2: "sig" is the only use a verification key may declare.
_USE_SIG: Final = "sig"
# RFC 7517 §4.3: the operation a verification key must allow.
_OP_VERIFY: Final = "verify"
# Members that only a private JWK carries (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
EC_CURVES: Final[dict[str, tuple[ec.EllipticCurve, int]]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_OKP_SIZES: Final = {"Ed25519": 32, "Ed448": 57}
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
# A JWK Set with more keys than this is a misconfiguration or an attack on our memory.
MAX_KEYS_PER_SET: Final = 256

# ROCA (CVE-2017-15361): moduli from the affected Infineon library are, modulo each
# of these small primes, a power of 65537. A random modulus passes all of them with
# probability about 2^-28, so a pass means a factorable key (Nemec et al., CCS 2017).
_ROCA_PRIMES: Final = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73,
                       79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167)
_ROCA_RESIDUES: Final = {p: frozenset(pow(65537, k, p) for k in range(p)) for p in _ROCA_PRIMES}


def has_roca_fingerprint(n: int) -> bool:
    return all(n % p in residues for p, residues in _ROCA_RESIDUES.items())


class JwkError(ValueError):
    """A JWK or JWK Set we refuse; `str(err)` is a safe sentence with no key material."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Jwk:
    """One verification key, decoded once; `algs` is every `alg` it may verify."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey = field(repr=False)  # never printed: for `oct` it is the secret
    use: str | None = None
    key_ops: frozenset[str] | None = None
    algs: frozenset[str] = frozenset()
    size: int = 0  # RSA modulus bits, HMAC key octets, curve coordinate octets

    def fits(self, alg: str) -> bool:
        """True when this key may verify `alg`: type, curve and size match, and the
        JWK's own `alg`, `use` and `key_ops` allow it (all folded into `algs` at load)."""
        return alg in self.algs


@dataclass(frozen=True, slots=True)
class _Meta:
    """The members every JWK may carry, whatever its type (RFC 7517 §4)."""

    kid: str | None
    alg: str | None
    use: str | None
    key_ops: frozenset[str] | None

    def restrict(self, candidates: frozenset[str]) -> frozenset[str]:
        # RFC 7517 §4.2 / §4.3 / §4.4: a key that declares another use, lacks the
        # "verify" operation, or names one alg, may not verify anything else.
        if self.use is not None and self.use != _USE_SIG:
            return frozenset()
        if self.key_ops is not None and _OP_VERIFY not in self.key_ops:
            return frozenset()
        if self.alg is not None:
            return candidates & {self.alg}
        return candidates

    def jwk(self, kty: str, crv: str | None, key: PublicKey, algs: frozenset[str], size: int) -> Jwk:
        return Jwk(self.kid, kty, crv, self.alg, key, self.use, self.key_ops, self.restrict(algs), size)


def b64_member(obj: Mapping[str, Any], name: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise JwkError(f"the '{name}' member is missing or not a string")
    # RFC 7518 §6: members are base64url without padding; anything else is ambiguous.
    if _B64URL.fullmatch(value) is None or len(value) % 4 == 1:
        raise JwkError(f"the '{name}' member is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwkError(f"the '{name}' member is not unpadded base64url") from exc


def opt_str_member(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JwkError(f"the '{name}' member is not a string")
    return value


def key_ops_member(obj: Mapping[str, Any]) -> frozenset[str] | None:
    value = obj.get("key_ops")
    if value is None:
        return None
    # RFC 7517 §4.3: an array of unique strings.
    if not isinstance(value, list) or not all(isinstance(op, str) for op in value):
        raise JwkError("the 'key_ops' member is not an array of strings")
    ops = frozenset(value)
    if len(ops) != len(value):
        raise JwkError("the 'key_ops' member repeats an operation")
    return ops


def parse_jwk(obj: object, *, allow_oct: bool = False) -> Jwk:
    """Decode one public JWK into a `Jwk`, or raise `JwkError` with a safe sentence.

    Accepts RSA (>= 2048 bits, odd e >= 3), EC P-256/P-384/P-521 (point checked
    by `cryptography`), OKP Ed25519/Ed448, and `oct` only when `allow_oct`.
    """
    if not isinstance(obj, dict):
        raise JwkError("a JWK must be a JSON object")
    kty = obj.get("kty")
    if not isinstance(kty, str):
        raise JwkError("the 'kty' member is missing or not a string")
    meta = _Meta(
        opt_str_member(obj, "kid"), opt_str_member(obj, "alg"), opt_str_member(obj, "use"), key_ops_member(obj)
    )
    if kty != "oct" and not PRIVATE_MEMBERS.isdisjoint(obj):
        # A JWK Set published for verification must never carry private keys.
        raise JwkError("the JWK carries private key members")
    if kty == "RSA":
        return _rsa(obj, meta)
    if kty == "EC":
        return _ec(obj, meta)
    if kty == "OKP":
        return _okp(obj, meta)
    if kty == "oct":
        if not allow_oct:
            # SPEC: HS* only with a configured secret, never a key from a JWK Set.
            raise JwkError("symmetric (oct) keys are not accepted here")
        secret = b64_member(obj, "k")
        return _hmac(secret, meta)
    raise JwkError("the key type is not supported")


def _rsa(obj: Mapping[str, Any], meta: _Meta) -> Jwk:
    # Leading zero octets in n are tolerated (RFC 7518 §6.3.1.1 forbids them, but
    # some issuers emit them); the size is taken from the value, not the encoding.
    n = int.from_bytes(b64_member(obj, "n"), "big")
    e = int.from_bytes(b64_member(obj, "e"), "big")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise JwkError("the RSA key is shorter than 2048 bits")
    if bits > MAX_RSA_BITS:
        raise JwkError("the RSA key is longer than 16384 bits")
    if n % 2 == 0:
        raise JwkError("the RSA modulus is even")
    # e = 1 makes every "signature" its own message; even e is not a valid RSA key.
    if e < 3 or e % 2 == 0 or e >= n:
        raise JwkError("the RSA public exponent is invalid")
    if has_roca_fingerprint(n):
        raise JwkError("the RSA key has the ROCA weakness (CVE-2017-15361) and can be factored")
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except (ValueError, TypeError) as exc:
        raise JwkError("the RSA key was refused by the crypto backend") from exc
    return meta.jwk("RSA", None, key, algs_for_rsa(bits), bits)


def _ec(obj: Mapping[str, Any], meta: _Meta) -> Jwk:
    crv = obj.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise JwkError("the EC curve is not supported")
    curve, size = EC_CURVES[crv]
    x = b64_member(obj, "x")
    y = b64_member(obj, "y")
    # RFC 7518 §6.2.1.2/§6.2.1.3: each coordinate is exactly the full coordinate size.
    if len(x) != size or len(y) != size:
        raise JwkError("the EC coordinates have the wrong length for the curve")
    try:
        # Raises unless the point is on the curve (and not the point at infinity).
        key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except (ValueError, TypeError) as exc:
        raise JwkError("the EC point is not on the curve") from exc
    return meta.jwk("EC", crv, key, algs_for_ec(crv), size)


def _okp(obj: Mapping[str, Any], meta: _Meta) -> Jwk:
    crv = obj.get("crv")
    # RFC 8037 §2: X25519/X448 are key-agreement curves, never signature keys.
    if not isinstance(crv, str) or crv not in _OKP_SIZES:
        raise JwkError("the OKP curve is not a signature curve we support")
    x = b64_member(obj, "x")
    if len(x) != _OKP_SIZES[crv]:
        raise JwkError("the OKP public key has the wrong length for the curve")
    key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
    try:
        if crv == "Ed25519":
            key = ed25519.Ed25519PublicKey.from_public_bytes(x)
        else:
            key = ed448.Ed448PublicKey.from_public_bytes(x)
    except (ValueError, TypeError) as exc:
        raise JwkError("the OKP public key was refused by the crypto backend") from exc
    return meta.jwk("OKP", crv, key, algs_for_okp(crv), len(x))


def _hmac(secret: bytes, meta: _Meta) -> Jwk:
    if len(secret) < MIN_HMAC_BYTES:
        # RFC 7518 §3.2: at least as long as the hash output; HS256 needs 32 octets.
        raise JwkError("the HMAC secret is shorter than 32 bytes")
    return meta.jwk("oct", None, bytes(secret), algs_for_hmac(len(secret)), len(secret))


def hmac_key(secret: bytes, *, kid: str | None = None) -> Jwk:
    """A key for a configured HS secret: fits each HS* whose hash is no longer than the secret."""
    if not isinstance(secret, (bytes, bytearray)):
        raise JwkError("the HMAC secret must be bytes")
    return _hmac(bytes(secret), _Meta(kid, None, None, None))


def parse_jwk_set(obj: object, *, allow_oct: bool = False) -> tuple[KeySet, tuple[str, ...]]:
    """Load a JWK Set (RFC 7517 §5): the usable keys, and one safe log sentence per skipped key.

    One bad key never fails the set; only a set that is not `{"keys": [...]}` does.
    """
    if not isinstance(obj, dict):
        raise JwkError("a JWK Set must be a JSON object")
    entries = obj.get("keys")
    if not isinstance(entries, list):
        raise JwkError("a JWK Set must have a 'keys' array")
    keys: list[Jwk] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        if index >= MAX_KEYS_PER_SET:
            skipped.append(f"keys after the first {MAX_KEYS_PER_SET} were skipped ({len(entries) - index} keys)")
            break
        try:
            keys.append(parse_jwk(entry, allow_oct=allow_oct))
        except JwkError as exc:
            # The index, not the kid: the kid is remote input and could carry anything.
            skipped.append(f"key #{index} skipped: {exc.description}")
    return KeySet(keys), tuple(skipped)


class KeySet:
    """An immutable, indexed set of verification keys."""

    __slots__ = ("_by_alg", "_by_kid", "_by_kid_alg", "_keys", "_kids")

    _keys: tuple[Jwk, ...]
    _kids: tuple[str, ...]
    _by_kid: dict[str, tuple[Jwk, ...]]
    _by_kid_alg: dict[tuple[str, str], tuple[Jwk, ...]]
    _by_alg: dict[str, tuple[Jwk, ...]]

    def __init__(self, keys: Sequence[Jwk]) -> None:
        all_keys = tuple(keys)
        by_kid: dict[str, list[Jwk]] = {}
        by_kid_alg: dict[tuple[str, str], list[Jwk]] = {}
        by_alg: dict[str, list[Jwk]] = {}
        for key in all_keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
                for alg in key.algs:
                    by_kid_alg.setdefault((key.kid, alg), []).append(key)
            for alg in key.algs:
                by_alg.setdefault(alg, []).append(key)
        set_ = object.__setattr__
        set_(self, "_keys", all_keys)
        set_(self, "_kids", tuple(by_kid))
        set_(self, "_by_kid", {k: tuple(v) for k, v in by_kid.items()})
        set_(self, "_by_kid_alg", {k: tuple(v) for k, v in by_kid_alg.items()})
        set_(self, "_by_alg", {k: tuple(v) for k, v in by_alg.items()})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("KeySet is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("KeySet is immutable")

    @property
    def keys(self) -> tuple[Jwk, ...]:
        return self._keys

    @property
    def kids(self) -> tuple[str, ...]:
        """The distinct kids, in set order."""
        return self._kids

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet({len(self._keys)} keys)"

    def select(self, alg: str, kid: str | None) -> tuple[Jwk, ...]:
        """The candidate keys for a token's `alg` and `kid`, in set order.

        A kid that is present narrows to its keys only; if none fits `alg` the token
        is rejected (ALG_NOT_ALLOWED), never retried with other keys.  An absent kid
        is UNKNOWN_KEY so the caller may refetch the set.
        """
        if kid is not None:
            hit = self._by_kid_alg.get((kid, alg))
            if hit is not None:
                return hit
            if kid in self._by_kid:
                raise TokenError(Reason.ALG_NOT_ALLOWED, "The key named by kid does not fit the token's algorithm.")
            raise TokenError(Reason.UNKNOWN_KEY, "No key matches the token's kid.")
        hit = self._by_alg.get(alg)
        if hit is None:
            raise TokenError(Reason.UNKNOWN_KEY, "No key fits the token's algorithm.")
        return hit

    def merged(self, other: KeySet) -> KeySet:
        """This set's keys followed by `other`'s."""
        return KeySet(self._keys + other._keys)
