"""Test-only helpers for the JOSE tests: a minimal signer, JWK export and the vectors path.

The gateway only verifies; tests need to mint tokens, including malformed ones
no library would produce (duplicate members, odd encodings), so this signer
takes raw header and payload octets.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeAlias

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | bytes
)

_HASHES: dict[str, hashes.HashAlgorithm] = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
_CRV = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def vectors_dir() -> Path:
    """tests/vectors: the published vectors, copied into the repository with their licence."""
    return Path(__file__).resolve().parents[1] / "vectors"


@cache
def wycheproof(name: str) -> dict[str, Any]:
    """One Wycheproof vector file from tests/vectors/wycheproof, parsed once per session."""
    data: dict[str, Any] = json.loads((vectors_dir() / "wycheproof" / name).read_text(encoding="utf-8"))
    return data


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64u(value.to_bytes(length, "big"))


def public_jwk(key: Any, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private or public `cryptography` key (or HMAC bytes)."""
    if isinstance(key, bytes):
        return {"kty": "oct", "k": b64u(key), **extra}
    pub = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "n": b64u_int(nums.n), "e": b64u_int(nums.e), **extra}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv, size = _CRV[pub.curve.name]
        enc = pub.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64u_int(enc.x, size), "y": b64u_int(enc.y, size), **extra}
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64u(pub.public_bytes_raw()), **extra}
    if isinstance(pub, ed448.Ed448PublicKey):
        return {"kty": "OKP", "crv": "Ed448", "x": b64u(pub.public_bytes_raw()), **extra}
    raise TypeError("unsupported key")


def sign(alg: str, key: PrivateKey, signing_input: bytes) -> bytes:
    """A JWS signature (RFC 7518 §3) over `signing_input`."""
    bits = alg[2:]
    if alg.startswith("HS"):
        assert isinstance(key, bytes)
        return hmac.digest(key, signing_input, "sha" + bits)
    if alg.startswith("RS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(signing_input, padding.PKCS1v15(), _HASHES[bits])
    if alg.startswith("PS"):
        assert isinstance(key, rsa.RSAPrivateKey)
        h = _HASHES[bits]
        return key.sign(signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if alg.startswith("ES"):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[bits])))
        size = _CRV[key.curve.name][1]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg in ("EdDSA", "Ed25519", "Ed448"):
        assert isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        return key.sign(signing_input)
    raise ValueError(alg)


def _segment(part: dict[str, Any] | str | bytes) -> str:
    if isinstance(part, dict):
        return b64u(json.dumps(part, separators=(",", ":")).encode())
    if isinstance(part, str):
        return b64u(part.encode())
    return b64u(part)


def make_token(
    header: dict[str, Any] | str | bytes,
    payload: dict[str, Any] | str | bytes,
    key: PrivateKey,
    alg: str | None = None,
) -> str:
    """A compact JWS; a str/bytes header or payload is used verbatim (for malformed JSON)."""
    if alg is None:
        assert isinstance(header, dict)
        alg = str(header["alg"])
    signing_input = _segment(header) + "." + _segment(payload)
    return signing_input + "." + b64u(sign(alg, key, signing_input.encode("ascii")))


def resign(token: str, key: PrivateKey, alg: str) -> str:
    """Replace the signature of `token` by a fresh one over its first two segments."""
    signing_input = token.rsplit(".", 1)[0]
    return signing_input + "." + b64u(sign(alg, key, signing_input.encode("ascii")))


@dataclass(frozen=True, slots=True)
class Keys:
    """One private key per family, generated once per session (RSA generation is slow)."""

    rsa: rsa.RSAPrivateKey
    p256: ec.EllipticCurvePrivateKey
    p384: ec.EllipticCurvePrivateKey
    p521: ec.EllipticCurvePrivateKey
    ed25519: ed25519.Ed25519PrivateKey
    ed448: ed448.Ed448PrivateKey
    secret: bytes  # 64 bytes: fits HS256/384/512

    def for_alg(self, alg: str) -> PrivateKey:
        if alg.startswith("HS"):
            return self.secret
        if alg[:2] in ("RS", "PS"):
            return self.rsa
        if alg.startswith("ES"):
            return {"256": self.p256, "384": self.p384, "512": self.p521}[alg[2:]]
        if alg in ("EdDSA", "Ed25519"):
            return self.ed25519
        if alg == "Ed448":
            return self.ed448
        raise ValueError(alg)


def make_keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        p256=ec.generate_private_key(ec.SECP256R1()),
        p384=ec.generate_private_key(ec.SECP384R1()),
        p521=ec.generate_private_key(ec.SECP521R1()),
        ed25519=ed25519.Ed25519PrivateKey.generate(),
        ed448=ed448.Ed448PrivateKey.generate(),
        secret=bytes(range(64)),
    )
