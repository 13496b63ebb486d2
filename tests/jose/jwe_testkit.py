"""Test-only JWE encryptor: builds compact JWEs from raw parts, so tests can make the
malformed and hostile ones no library would (wrong lengths, odd headers, chosen epk).

The gateway only decrypts; this is the other half, written from RFC 7516 §5.1 and
RFC 7518 §4-5 directly.
"""

from __future__ import annotations

import hmac
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from jose_testkit import b64u, b64u_int

from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, concat_kdf

_CRV = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def private_jwk(key: Any, **extra: Any) -> dict[str, Any]:
    """The private JWK of a `cryptography` key (or AES key bytes)."""
    if isinstance(key, bytes):
        return {"kty": "oct", "k": b64u(key), **extra}
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        pub = n.public_numbers
        return {
            "kty": "RSA", "n": b64u_int(pub.n), "e": b64u_int(pub.e), "d": b64u_int(n.d), "p": b64u_int(n.p),
            "q": b64u_int(n.q), "dp": b64u_int(n.dmp1), "dq": b64u_int(n.dmq1), "qi": b64u_int(n.iqmp), **extra,
        }
    if isinstance(key, ec.EllipticCurvePrivateKey):
        crv, size = _CRV[key.curve.name]
        pub = key.public_key().public_numbers()
        return {
            "kty": "EC", "crv": crv, "x": b64u_int(pub.x, size), "y": b64u_int(pub.y, size),
            "d": b64u_int(key.private_numbers().private_value, size), **extra,
        }
    if isinstance(key, x25519.X25519PrivateKey):
        return {
            "kty": "OKP", "crv": "X25519", "x": b64u(key.public_key().public_bytes_raw()),
            "d": b64u(key.private_bytes_raw()), **extra,
        }
    raise TypeError("unsupported key")


def public_epk(key: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey) -> dict[str, Any]:
    jwk = private_jwk(key)
    del jwk["d"]
    return jwk


def content_encrypt(enc: str, cek: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, tag) for `enc` (RFC 7518 §5.2.2.1 / §5.3)."""
    spec = CONTENT_ENCRYPTION[enc]
    if spec.cbc_hash is None:
        out = AESGCM(cek).encrypt(iv, plaintext, aad)
        return out[:-16], out[-16:]
    half = spec.cek_bytes // 2
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek[half:]), modes.CBC(iv)).encryptor()
    ct = encryptor.update(padded) + encryptor.finalize()
    al = struct.pack(">Q", len(aad) * 8)
    tag = hmac.digest(cek[:half], aad + iv + ct + al, spec.cbc_hash.name)[:half]
    return ct, tag


def compact(header: dict[str, Any] | bytes, ek: bytes, iv: bytes, ct: bytes, tag: bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return ".".join([b64u(raw), b64u(ek), b64u(iv), b64u(ct), b64u(tag)])


def encrypt(
    header: dict[str, Any],
    plaintext: bytes,
    key: Any,
    *,
    cek: bytes | None = None,
    raw_header: bytes | None = None,
) -> str:
    """A well-formed compact JWE of `plaintext` to the recipient `key` (public or private
    `cryptography` key, or AES bytes), with `header["alg"]` / `header["enc"]`.  For ECDH-ES
    an `epk` is generated unless the header already carries one together with `_epk_private`."""
    header = dict(header)
    alg, enc = header["alg"], header["enc"]
    spec = CONTENT_ENCRYPTION[enc]
    km = KEY_MANAGEMENT[alg]
    cek = cek if cek is not None else os.urandom(spec.cek_bytes)
    ek = b""
    if km.family == "RSA-OAEP":
        pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
        assert km.oaep_hash is not None
        ek = pub.encrypt(cek, asym_padding.OAEP(asym_padding.MGF1(km.oaep_hash), km.oaep_hash, None))
    elif km.family == "AESKW":
        ek = aes_key_wrap(key, cek)
    elif km.family == "AESGCMKW":
        wrap_iv = os.urandom(12)
        out = AESGCM(key).encrypt(wrap_iv, cek, b"")
        ek = out[:-16]
        header.setdefault("iv", b64u(wrap_iv))
        header.setdefault("tag", b64u(out[-16:]))
    elif km.family == "dir":
        cek = key
    elif km.family == "ECDH-ES":
        eph = header.pop("_epk_private", None)
        recipient = key.public_key() if hasattr(key, "private_bytes") else key
        if eph is None:
            eph = (
                x25519.X25519PrivateKey.generate()
                if isinstance(recipient, x25519.X25519PublicKey)
                else ec.generate_private_key(recipient.curve)
            )
        header.setdefault("epk", public_epk(eph))
        z = eph.exchange(recipient) if isinstance(eph, x25519.X25519PrivateKey) else eph.exchange(ec.ECDH(), recipient)
        if km.kek_bytes == 0:
            cek = concat_kdf(z, enc, spec.cek_bytes, b"", b"")
        else:
            ek = aes_key_wrap(concat_kdf(z, alg, km.kek_bytes, b"", b""), cek)
    raw = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    iv = os.urandom(12 if spec.cbc_hash is None else 16)
    ct, tag = content_encrypt(enc, cek, iv, plaintext, b64u(raw).encode())
    return compact(raw, ek, iv, ct, tag)
