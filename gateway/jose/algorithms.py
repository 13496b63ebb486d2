"""The JWS algorithm table and the one signature check every token goes through.

Each supported `alg` (RFC 7518 §3.1, RFC 8037 §3.1, RFC 9864 §2.2) maps to one
precomputed `AlgSpec` holding the `cryptography` objects it needs (hash,
padding, ECDSA descriptor), built once at import.  `verify_signature` is total:
it answers True or False for any input and never raises, so the verifier above
it has one failure mode to handle (BAD_SIGNATURE).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

if TYPE_CHECKING:
    from gateway.jose.jwk import Jwk

__all__ = [
    "MIN_HMAC_BYTES",
    "MIN_RSA_BITS",
    "SUPPORTED",
    "AlgSpec",
    "algs_for_ec",
    "algs_for_hmac",
    "algs_for_okp",
    "algs_for_rsa",
    "spec_for",
    "verify_signature",
]

# RFC 7518 §3.3 / §3.5: "A key of size 2048 bits or larger MUST be used".
MIN_RSA_BITS: Final = 2048
# Keys larger than this cost seconds per verification and exist only as a DoS lever.
MAX_RSA_BITS: Final = 16384
# RFC 7518 §3.2 requires a key at least as long as the hash output; HS256 is the floor.
MIN_HMAC_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class AlgSpec:
    """Everything needed to verify one `alg`, built once."""

    name: str
    family: str  # "HS" | "RS" | "PS" | "ES" | "OKP"
    hash_name: str | None  # hashlib name for HMAC
    hash: hashes.HashAlgorithm | None
    digest_size: int  # octets; also the HMAC minimum key size and the PSS salt length
    rsa_padding: padding.AsymmetricPadding | None
    ecdsa: ec.ECDSA | None
    ec_curve: str | None  # JWK crv for ES*
    ec_coord_size: int  # octets per coordinate / per r and s (RFC 7518 §3.4)
    ec_order: int  # group order n: r and s must lie in [1, n-1]
    okp_curves: frozenset[str]  # JWK crv values an OKP alg accepts


def _hs(name: str, hash_name: str, h: hashes.HashAlgorithm) -> AlgSpec:
    return AlgSpec(name, "HS", hash_name, h, h.digest_size, None, None, None, 0, 0, frozenset())


def _rs(name: str, h: hashes.HashAlgorithm) -> AlgSpec:
    return AlgSpec(name, "RS", None, h, h.digest_size, padding.PKCS1v15(), None, None, 0, 0, frozenset())


def _ps(name: str, h: hashes.HashAlgorithm) -> AlgSpec:
    # RFC 7518 §3.5: MGF1 with the same hash, salt length equal to the hash output.
    # An exact salt length, never PSS.AUTO, so a signature made with another salt fails.
    pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    return AlgSpec(name, "PS", None, h, h.digest_size, pss, None, None, 0, 0, frozenset())


def _es(name: str, h: hashes.HashAlgorithm, crv: str, coord: int, order: int) -> AlgSpec:
    return AlgSpec(name, "ES", None, h, h.digest_size, None, ec.ECDSA(h), crv, coord, order, frozenset())


def _okp(name: str, curves: frozenset[str]) -> AlgSpec:
    return AlgSpec(name, "OKP", None, None, 0, None, None, None, 0, 0, curves)


_P256_N: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_N: Final = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)
# SEC 2 §2.6.1 / FIPS 186-5 D.1.2.5; tests pin each order (n-1 is a valid private key, n is not).
_P521_N: Final = int(
    "1FF" + "F" * 63 + "A51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)

_TABLE: Final[dict[str, AlgSpec]] = {
    s.name: s
    for s in (
        _hs("HS256", "sha256", hashes.SHA256()),
        _hs("HS384", "sha384", hashes.SHA384()),
        _hs("HS512", "sha512", hashes.SHA512()),
        _rs("RS256", hashes.SHA256()),
        _rs("RS384", hashes.SHA384()),
        _rs("RS512", hashes.SHA512()),
        _ps("PS256", hashes.SHA256()),
        _ps("PS384", hashes.SHA384()),
        _ps("PS512", hashes.SHA512()),
        _es("ES256", hashes.SHA256(), "P-256", 32, _P256_N),
        _es("ES384", hashes.SHA384(), "P-384", 48, _P384_N),
        # P-521 coordinates are 521 bits: 66 octets (RFC 7518 §3.4), not 64.
        _es("ES512", hashes.SHA512(), "P-521", 66, _P521_N),
        # RFC 8037 §3.1: EdDSA takes the curve from the key.
        _okp("EdDSA", frozenset({"Ed25519", "Ed448"})),
        # RFC 9864 §2.2: fully specified names pin the curve.
        _okp("Ed25519", frozenset({"Ed25519"})),
        _okp("Ed448", frozenset({"Ed448"})),
    )
}

SUPPORTED: Final[frozenset[str]] = frozenset(_TABLE)

_RSA_ALGS: Final = frozenset(n for n, s in _TABLE.items() if s.family in ("RS", "PS"))
_EC_ALGS: Final[dict[str, frozenset[str]]] = {
    crv: frozenset(n for n, s in _TABLE.items() if s.ec_curve == crv) for crv in ("P-256", "P-384", "P-521")
}
_OKP_ALGS: Final[dict[str, frozenset[str]]] = {
    crv: frozenset(n for n, s in _TABLE.items() if crv in s.okp_curves) for crv in ("Ed25519", "Ed448")
}
# Ed25519 signatures are 64 octets, Ed448 114 (RFC 8032 §5.1.6, §5.2.6).
_OKP_SIG_LEN: Final = {"Ed25519": 64, "Ed448": 114}


def spec_for(alg: str) -> AlgSpec | None:
    """The table entry for `alg`, or None when we do not implement it."""
    return _TABLE.get(alg)


def algs_for_rsa(bits: int) -> frozenset[str]:
    """RS*/PS* need an RSA modulus of at least 2048 bits (RFC 7518 §3.3, §3.5)."""
    return _RSA_ALGS if MIN_RSA_BITS <= bits <= MAX_RSA_BITS else frozenset()


def algs_for_ec(crv: str) -> frozenset[str]:
    """ES256/384/512 each name exactly one curve (RFC 7518 §3.4)."""
    return _EC_ALGS.get(crv, frozenset())


def algs_for_okp(crv: str) -> frozenset[str]:
    """EdDSA fits both Edwards curves; Ed25519/Ed448 fit only their own (RFC 9864 §2.2)."""
    return _OKP_ALGS.get(crv, frozenset())


def algs_for_hmac(key_len: int) -> frozenset[str]:
    """HS* whose hash output is no longer than the key (RFC 7518 §3.2)."""
    return frozenset(n for n, s in _TABLE.items() if s.family == "HS" and key_len >= s.digest_size)


def verify_signature(alg: str, key: Jwk, signing_input: bytes, signature: bytes) -> bool:
    """True only if `signature` is a valid `alg` signature by `key` over `signing_input`.

    Never raises: an unknown alg, a key unfit for it, a malformed signature of any
    length or a backend error all answer False.
    """
    try:
        spec = _TABLE.get(alg)
        if spec is None or not key.fits(alg):
            return False
        family = spec.family
        pub = key.key
        if family == "HS":
            if not isinstance(pub, bytes) or spec.hash_name is None:
                return False
            # RFC 7518 §3.2: compare the full MAC, in constant time; a truncated tag is not a JWS signature.
            return hmac.compare_digest(hmac.digest(pub, signing_input, spec.hash_name), signature)
        if family == "ES":
            return _verify_ecdsa(spec, pub, signing_input, signature)
        if family == "RS" or family == "PS":
            if not isinstance(pub, rsa.RSAPublicKey) or spec.hash is None or spec.rsa_padding is None:
                return False
            # RFC 8017 §8.2.2 step 1 / §8.1.2 step 1: the signature is exactly k octets.
            if len(signature) != (pub.key_size + 7) // 8:
                return False
            pub.verify(signature, signing_input, spec.rsa_padding, spec.hash)
            return True
        if family == "OKP":
            crv = key.crv
            if crv is None or len(signature) != _OKP_SIG_LEN.get(crv, -1):
                return False
            if isinstance(pub, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                pub.verify(signature, signing_input)
                return True
        return False
    except InvalidSignature:
        return False
    except Exception:
        return False


def _verify_ecdsa(spec: AlgSpec, pub: object, signing_input: bytes, signature: bytes) -> bool:
    if not isinstance(pub, ec.EllipticCurvePublicKey) or spec.ecdsa is None:
        return False
    size = spec.ec_coord_size
    # RFC 7518 §3.4: the JWS signature is R || S, each exactly the coordinate size.
    # Any other length (including a DER encoding) is rejected before any arithmetic.
    if len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    # SEC 1 §4.1.4 step 1: r and s must be in [1, n-1]; r = s = 0 is the classic forgery.
    n = spec.ec_order
    if not (0 < r < n and 0 < s < n):
        return False
    pub.verify(encode_dss_signature(r, s), signing_input, spec.ecdsa)
    return True
