"""Turn the gateway's private JWKs (RFC 7517) into decryption keys once, at load, and pick candidates per JWE.

Each `DecryptionKey` holds a ready `cryptography` private key (or AES key bytes)
and the set of JWE `alg` values it may serve, with the JWK's own `alg`, `use` and
`key_ops` folded in.  Loading refuses, with a safe sentence: a public key where a
private one is needed, RSA below 2048 bits, an `oct` key whose length fits none
(or not its own) `alg`, a JWK `alg` that does not fit the key, RSA1_5 and PBES2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from gateway.jose.algorithms import MAX_RSA_BITS, MIN_RSA_BITS
from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from gateway.jose.jwk import (
    EC_CURVES,
    MAX_KEYS_PER_SET,
    JwkError,
    b64_member,
    has_roca_fingerprint,
    key_ops_member,
    opt_str_member,
)

__all__ = ["DecryptionKey", "DecryptionKeySet", "PrivateKey", "parse_decryption_jwk", "parse_decryption_jwk_set"]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey | bytes

_RSA_ALGS: Final = frozenset({"RSA-OAEP", "RSA-OAEP-256"})
_ECDH_ALGS: Final = frozenset(n for n, k in KEY_MANAGEMENT.items() if k.family == "ECDH-ES")
# RFC 7517 §4.3: the operations a decryption key may be declared for.
_DECRYPT_OPS: Final = frozenset({"decrypt", "unwrapKey", "deriveKey", "deriveBits"})
# Named here so the error says why, rather than "unknown alg".
_NEVER: Final = {
    "RSA1_5": "RSA1_5 is never supported (PKCS #1 v1.5 padding oracle, RFC 8725 §3.2)",
}


@dataclass(frozen=True, slots=True)
class DecryptionKey:
    """One private key, decoded once; `algs` is every JWE `alg` it may serve."""

    kid: str | None
    kty: str
    crv: str | None
    key: PrivateKey = field(repr=False)  # never printed
    algs: frozenset[str]
    dir_enc: frozenset[str] = frozenset()  # for `dir`: the `enc` values whose CEK this key is
    size: int = 0  # RSA modulus bits, oct key octets, curve coordinate octets

    def fits(self, alg: str) -> bool:
        return alg in self.algs


def _oct_algs(length: int) -> tuple[frozenset[str], frozenset[str]]:
    """The `alg`s an AES key of `length` octets fits, and the `enc`s it is a `dir` CEK for."""
    wrap = frozenset(
        n for n, k in KEY_MANAGEMENT.items() if k.family in ("AESKW", "AESGCMKW") and k.kek_bytes == length
    )
    direct = frozenset(n for n, e in CONTENT_ENCRYPTION.items() if e.cek_bytes == length)
    return (wrap | {"dir"} if direct else wrap), direct


def _restrict(
    obj: Mapping[str, Any], fitting: frozenset[str], dir_enc: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Fold the JWK's `use`, `key_ops` and `alg` into what the key fits; a declared `alg`
    that does not fit is an error, not a silently unusable key."""
    use = opt_str_member(obj, "use")
    if use is not None and use != "enc":
        raise JwkError("the key's 'use' is not 'enc'")
    ops = key_ops_member(obj)
    if ops is not None and ops.isdisjoint(_DECRYPT_OPS):
        raise JwkError("the key's 'key_ops' allow no decryption operation")
    alg = opt_str_member(obj, "alg")
    if alg is None:
        return fitting, dir_enc
    if alg in _NEVER:
        raise JwkError(_NEVER[alg])
    if alg in fitting:
        return frozenset({alg}), (dir_enc if alg == "dir" else frozenset())
    # RFC 7520 §5.6 labels a `dir` key with the `enc` it is the CEK for.
    if alg in dir_enc:
        return frozenset({"dir"}), frozenset({alg})
    raise JwkError(f"the key's 'alg' {alg!r} does not fit the key" if _printable(alg) else "the key's 'alg' does not fit the key")


def _printable(text: str) -> bool:
    return len(text) <= 32 and text.isascii() and text.isprintable()


def parse_decryption_jwk(obj: object) -> DecryptionKey:
    """Decode one private JWK into a `DecryptionKey`, or raise `JwkError` with a safe sentence."""
    if not isinstance(obj, dict):
        raise JwkError("a JWK must be a JSON object")
    kty = obj.get("kty")
    if not isinstance(kty, str):
        raise JwkError("the 'kty' member is missing or not a string")
    kid = opt_str_member(obj, "kid")
    if kty == "oct":
        secret = b64_member(obj, "k")
        fitting, dir_enc = _oct_algs(len(secret))
        if not fitting:
            raise JwkError("the oct key is 16, 24, 32, 48 or 64 bytes long for no JWE algorithm")
        algs, dir_enc = _restrict(obj, fitting, dir_enc)
        # A declared alg of another size was refused by _restrict as "does not fit".
        return DecryptionKey(kid, "oct", None, bytes(secret), algs, dir_enc, len(secret))
    if "d" not in obj:
        raise JwkError("the JWK is a public key; decryption needs the private key ('d')")
    if kty == "RSA":
        key, bits = _rsa_private(obj)
        algs, _ = _restrict(obj, _RSA_ALGS, frozenset())
        return DecryptionKey(kid, "RSA", None, key, algs, frozenset(), bits)
    if kty == "EC":
        ec_key, crv, size = _ec_private(obj)
        algs, _ = _restrict(obj, _ECDH_ALGS, frozenset())
        return DecryptionKey(kid, "EC", crv, ec_key, algs, frozenset(), size)
    if kty == "OKP":
        okp_key = _x25519_private(obj)
        algs, _ = _restrict(obj, _ECDH_ALGS, frozenset())
        return DecryptionKey(kid, "OKP", "X25519", okp_key, algs, frozenset(), 32)
    raise JwkError("the key type is not supported")


def _int(obj: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(b64_member(obj, name), "big")


def _rsa_private(obj: Mapping[str, Any]) -> tuple[rsa.RSAPrivateKey, int]:
    n, e, d = _int(obj, "n"), _int(obj, "e"), _int(obj, "d")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise JwkError("the RSA key is shorter than 2048 bits")
    if bits > MAX_RSA_BITS:
        raise JwkError("the RSA key is longer than 16384 bits")
    if "oth" in obj:
        raise JwkError("multi-prime RSA keys ('oth') are not supported")
    if has_roca_fingerprint(n):
        # Anyone could factor the public modulus and decrypt every token sent to us.
        raise JwkError("the RSA key has the ROCA weakness (CVE-2017-15361) and can be factored")
    try:
        if all(m in obj for m in ("p", "q", "dp", "dq", "qi")):
            p, q = _int(obj, "p"), _int(obj, "q")
            numbers = rsa.RSAPrivateNumbers(
                p, q, d, _int(obj, "dp"), _int(obj, "dq"), _int(obj, "qi"), rsa.RSAPublicNumbers(e, n)
            )
        else:
            # RFC 7518 §6.3.2: the CRT members are optional as a group; recover them.
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
            numbers = rsa.RSAPrivateNumbers(
                p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                rsa.RSAPublicNumbers(e, n),
            )
        # Checks the members are one consistent key (p*q = n, CRT values, e*d).
        return numbers.private_key(), bits
    except (ValueError, TypeError) as exc:
        raise JwkError("the RSA private key is inconsistent or refused by the crypto backend") from exc


def _ec_private(obj: Mapping[str, Any]) -> tuple[ec.EllipticCurvePrivateKey, str, int]:
    crv = obj.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise JwkError("the EC curve is not supported")
    curve, size = EC_CURVES[crv]
    d_bytes, x, y = b64_member(obj, "d"), b64_member(obj, "x"), b64_member(obj, "y")
    # RFC 7518 §6.2.2.1: d is exactly the coordinate size.
    if len(d_bytes) != size or len(x) != size or len(y) != size:
        raise JwkError("the EC key members have the wrong length for the curve")
    try:
        key = ec.derive_private_key(int.from_bytes(d_bytes, "big"), curve)
    except (ValueError, TypeError) as exc:
        raise JwkError("the EC private key is out of range for the curve") from exc
    public = key.public_key().public_numbers()
    if (public.x, public.y) != (int.from_bytes(x, "big"), int.from_bytes(y, "big")):
        raise JwkError("the EC private key does not match its public point")
    return key, crv, size


def _x25519_private(obj: Mapping[str, Any]) -> x25519.X25519PrivateKey:
    # RFC 8037 §2: X25519 is the key-agreement curve; Ed25519/Ed448 keys sign, never decrypt.
    if obj.get("crv") != "X25519":
        raise JwkError("the OKP curve is not X25519")
    d_bytes, x = b64_member(obj, "d"), b64_member(obj, "x")
    if len(d_bytes) != 32 or len(x) != 32:
        raise JwkError("the X25519 key members are not 32 bytes")
    key = x25519.X25519PrivateKey.from_private_bytes(d_bytes)
    if key.public_key().public_bytes_raw() != x:
        raise JwkError("the X25519 private key does not match its public key")
    return key


def parse_decryption_jwk_set(obj: object) -> tuple[DecryptionKeySet, tuple[str, ...]]:
    """Load a JWK Set of private keys: every key must load (this is our own configuration,
    so a bad key is an error to fix, not one to skip); returns the set and no warnings."""
    if not isinstance(obj, dict):
        raise JwkError("a JWK Set must be a JSON object")
    entries = obj.get("keys")
    if not isinstance(entries, list) or not entries:
        raise JwkError("a JWK Set must have a non-empty 'keys' array")
    if len(entries) > MAX_KEYS_PER_SET:
        raise JwkError(f"a JWK Set may hold at most {MAX_KEYS_PER_SET} keys")
    keys = []
    for index, entry in enumerate(entries):
        try:
            keys.append(parse_decryption_jwk(entry))
        except JwkError as exc:
            raise JwkError(f"key #{index}: {exc.description}") from exc
    kids = [k.kid for k in keys if k.kid is not None]
    if len(set(kids)) != len(kids):
        # A kid must name one key, or "no fallback" would be ambiguous.
        raise JwkError("two keys share a kid")
    return DecryptionKeySet(keys), ()


class DecryptionKeySet:
    """An immutable set of decryption keys indexed by kid and by alg."""

    __slots__ = ("_by_alg", "_by_kid", "keys")

    def __init__(self, keys: Sequence[DecryptionKey]) -> None:
        self.keys: tuple[DecryptionKey, ...] = tuple(keys)
        self._by_kid: dict[str, DecryptionKey] = {k.kid: k for k in self.keys if k.kid is not None}
        by_alg: dict[str, list[DecryptionKey]] = {}
        for key in self.keys:
            for alg in key.algs:
                by_alg.setdefault(alg, []).append(key)
        self._by_alg = {alg: tuple(v) for alg, v in by_alg.items()}

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"DecryptionKeySet({len(self.keys)} keys)"

    def select(self, alg: str, kid: str | None) -> tuple[DecryptionKey, ...]:
        """The keys to try: the one `kid` names (only if it fits `alg`: no fallback), or every
        key that fits `alg`.  Nothing to try is a decryption failure like any other."""
        if kid is not None:
            key = self._by_kid.get(kid)
            if key is None or not key.fits(alg):
                raise TokenError(Reason.DECRYPT_FAILED, DECRYPT_FAILED_DESCRIPTION)
            return (key,)
        found = self._by_alg.get(alg)
        if not found:
            raise TokenError(Reason.DECRYPT_FAILED, DECRYPT_FAILED_DESCRIPTION)
        return found
