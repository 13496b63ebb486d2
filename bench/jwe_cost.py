"""Measure what gateway.jose's JWE layer adds on top of bare `cryptography` decryption.

For RSA-OAEP-256 + A256GCM (2048-bit key) and ECDH-ES+A256KW + A256GCM (P-256), in one
process with timeit (7 interleaved rounds, best of each), on a nested JWT (a signed JWT inside):
  ours = unwrap_nested_jws(compact, keys, policy)  (parse + header checks + decrypt + JWS shape)
  bare = the same cryptography calls on pre-split, pre-decoded bytes:
         RSA: private_key.decrypt(OAEP-256) + AESGCM.decrypt
         ECDH: from_encoded_point(epk) + exchange + ConcatKDFHash + aes_key_unwrap + AESGCM.decrypt
and prints each per-call cost and the ratio ours/bare.

Run: .venv/bin/python bench/jwe_cost.py
"""

from __future__ import annotations

import base64
import json
import os
import platform
import struct
import timeit
from collections.abc import Callable
from typing import Any

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from gateway.jose.jwe import JwePolicy, unwrap_nested_jws
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk

# A realistic inner token: an ES256 JWT of ~400 bytes (its signature is not checked here).
INNER = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImUxIn0."
    + base64.urlsafe_b64encode(
        json.dumps(
            {
                "iss": "https://idp.example.com/", "sub": "user-123", "aud": "orders-api", "iat": 1700000000,
                "exp": 1700000600, "scope": "orders:read orders:write", "email": "user@example.com",
                "realm_access": {"roles": ["admin", "ops"]},
            }
        ).encode()
    ).rstrip(b"=").decode()
    + "." + "A" * 86
).encode()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(value: int, size: int | None = None) -> str:
    return b64u(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


def per_call(fn: Callable[[], object], number: int) -> float:
    return timeit.timeit(fn, number=number) / number


def kdf(z: bytes, alg: str, size: int) -> bytes:
    info = struct.pack(">I", len(alg)) + alg.encode() + b"\0\0\0\0" * 2 + struct.pack(">I", size * 8)
    return ConcatKDFHash(hashes.SHA256(), size, info).derive(z)


def seal(header: dict[str, Any], cek: bytes, ek: bytes) -> tuple[str, bytes, bytes, bytes, bytes]:
    """(compact, aad, iv, ct, tag) for A256GCM."""
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(12)
    out = AESGCM(cek).encrypt(iv, INNER, h.encode())
    ct, tag = out[:-16], out[-16:]
    return ".".join([h, b64u(ek), b64u(iv), b64u(ct), b64u(tag)]), h.encode(), iv, ct, tag


def report(name: str, ours: Callable[[], object], bare: Callable[[], object], number: int) -> None:
    # Interleaved rounds, best of each: a shared machine's noise hits both sides alike.
    t_bare = t_ours = float("inf")
    for _ in range(7):
        t_bare = min(t_bare, per_call(bare, number))
        t_ours = min(t_ours, per_call(ours, number))
    print(f"{name:28} bare {t_bare * 1e6:8.1f} us | unwrap_nested_jws {t_ours * 1e6:8.1f} us (x{t_ours / t_bare:.3f})")


def main() -> None:
    print(f"python {platform.python_version()}, cryptography {cryptography.__version__}, {platform.machine()}")
    policy = JwePolicy(frozenset({"RSA-OAEP-256", "ECDH-ES+A256KW"}), frozenset({"A256GCM"}))

    # RSA-OAEP-256 + A256GCM
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = rsa_key.private_numbers()
    rsa_jwk = {
        "kty": "RSA", "kid": "r1", "n": b64u_int(n.public_numbers.n), "e": b64u_int(n.public_numbers.e),
        "d": b64u_int(n.d), "p": b64u_int(n.p), "q": b64u_int(n.q), "dp": b64u_int(n.dmp1), "dq": b64u_int(n.dmq1),
        "qi": b64u_int(n.iqmp),
    }  # fmt: skip
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    cek = os.urandom(32)
    ek = rsa_key.public_key().encrypt(cek, oaep)
    token, aad, iv, ct, tag = seal({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "r1", "cty": "JWT"}, cek, ek)
    keys = DecryptionKeySet([parse_decryption_jwk(rsa_jwk)])
    rsa_private = keys.keys[0].key  # the same key object on both sides
    assert isinstance(rsa_private, rsa.RSAPrivateKey)
    ct_tag = ct + tag

    def bare_rsa() -> object:
        return AESGCM(rsa_private.decrypt(ek, oaep)).decrypt(iv, ct_tag, aad)

    assert bare_rsa() == INNER and unwrap_nested_jws(token, keys, policy).jws.encode() == INNER
    report("RSA-OAEP-256 + A256GCM", lambda: unwrap_nested_jws(token, keys, policy), bare_rsa, 500)

    # ECDH-ES+A256KW + A256GCM on P-256
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pn = ec_key.public_key().public_numbers()
    ec_jwk = {
        "kty": "EC", "kid": "e1", "crv": "P-256", "x": b64u_int(pn.x, 32), "y": b64u_int(pn.y, 32),
        "d": b64u_int(ec_key.private_numbers().private_value, 32),
    }  # fmt: skip
    eph = ec.generate_private_key(ec.SECP256R1())
    en = eph.public_key().public_numbers()
    epk = {"kty": "EC", "crv": "P-256", "x": b64u_int(en.x, 32), "y": b64u_int(en.y, 32)}
    kek = kdf(eph.exchange(ec.ECDH(), ec_key.public_key()), "ECDH-ES+A256KW", 32)
    cek = os.urandom(32)
    ek = aes_key_wrap(kek, cek)
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "e1", "cty": "JWT", "epk": epk}
    token, aad, iv, ct, tag = seal(header, cek, ek)
    keys = DecryptionKeySet([parse_decryption_jwk(ec_jwk)])
    ec_private = keys.keys[0].key
    assert isinstance(ec_private, ec.EllipticCurvePrivateKey)
    point = b"\x04" + en.x.to_bytes(32, "big") + en.y.to_bytes(32, "big")
    curve = ec.SECP256R1()
    ct_tag = ct + tag

    def bare_ecdh() -> object:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        wrapping = kdf(ec_private.exchange(ec.ECDH(), peer), "ECDH-ES+A256KW", 32)
        return AESGCM(aes_key_unwrap(wrapping, ek)).decrypt(iv, ct_tag, aad)

    assert bare_ecdh() == INNER and unwrap_nested_jws(token, keys, policy).jws.encode() == INNER
    report("ECDH-ES+A256KW + A256GCM", lambda: unwrap_nested_jws(token, keys, policy), bare_ecdh, 1000)


if __name__ == "__main__":
    main()
