"""Measure what gateway.jose adds on top of a bare `cryptography` signature check.

For RS256 (2048-bit) and ES256, in one process with timeit (best of 5 repeats):
  full  = parse_token(compact) + verify_token(...)   (uncached: parsed every time)
  sig   = verify_signature(alg, key, signing_input, signature)
  bare  = public_key.verify(...) on the same signature (for ES256 the DER form is
          prepared outside the timing, so bare is the pure OpenSSL verify)
and prints each per-call cost and the ratios full/bare and sig/bare.

Run: .venv/bin/python bench/verify_cost.py
"""

from __future__ import annotations

import base64
import json
import platform
import timeit
from collections.abc import Callable

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.jose.algorithms import verify_signature
from gateway.jose.claims import ClaimPolicy
from gateway.jose.jwk import KeySet, parse_jwk
from gateway.jose.jws import parse_token
from gateway.jose.verifier import VerifyPolicy, verify_token

NOW = 1_700_000_000.0
ISS = "https://idp.example.com/"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(value: int, size: int) -> str:
    return b64u(value.to_bytes(size, "big"))


def per_call(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def signing_input(alg: str, kid: str) -> bytes:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    claims = {
        "iss": ISS, "sub": "user-123", "aud": "orders-api", "iat": int(NOW) - 10, "exp": int(NOW) + 600,
        "scope": "orders:read orders:write", "email": "user@example.com", "realm_access": {"roles": ["admin", "ops"]},
    }  # fmt: skip
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    p = b64u(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}".encode("ascii")


def report(alg: str, token: str, keys: KeySet, bare: Callable[[], object], number: int) -> None:
    policy = VerifyPolicy(frozenset({alg}), ClaimPolicy(ISS, frozenset({"orders-api"})))
    parsed = parse_token(token)
    key = keys.keys[0]
    si, sig = parsed.jws.signing_input, parsed.jws.signature

    def full() -> object:
        return verify_token(parse_token(token), policy, keys, NOW)

    def sig_only() -> object:
        return verify_signature(alg, key, si, sig)

    assert verify_signature(alg, key, si, sig) and full() is key
    t_bare = per_call(bare, number)
    t_full = per_call(full, number)
    t_sig = per_call(sig_only, number)
    t_parse = per_call(lambda: parse_token(token), number * 10)
    print(
        f"{alg:6} bare {t_bare * 1e6:8.1f} us | verify_signature {t_sig * 1e6:8.1f} us (x{t_sig / t_bare:.3f}) "
        f"| parse_token+verify_token {t_full * 1e6:8.1f} us (x{t_full / t_bare:.3f}) | parse_token alone {t_parse * 1e6:6.1f} us"
    )


def main() -> None:
    print(f"python {platform.python_version()}, cryptography {cryptography.__version__}, {platform.machine()}")

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = rsa_key.public_key().public_numbers()
    rsa_jwk = {"kty": "RSA", "kid": "r1", "n": b64u_int(nums.n, 256), "e": b64u_int(nums.e, 3)}
    si = signing_input("RS256", "r1")
    rsa_sig = rsa_key.sign(si, padding.PKCS1v15(), hashes.SHA256())
    rsa_pub = rsa_key.public_key()
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    report(
        "RS256",
        f"{si.decode()}.{b64u(rsa_sig)}",
        KeySet([parse_jwk(rsa_jwk)]),
        lambda: rsa_pub.verify(rsa_sig, si, pkcs1, sha256),
        2000,
    )

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pn = ec_key.public_key().public_numbers()
    ec_jwk = {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64u_int(pn.x, 32), "y": b64u_int(pn.y, 32)}
    si = signing_input("ES256", "e1")
    der = ec_key.sign(si, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert encode_dss_signature(r, s) == der
    ec_pub, ecdsa = ec_key.public_key(), ec.ECDSA(hashes.SHA256())
    report(
        "ES256",
        f"{si.decode()}.{b64u(raw)}",
        KeySet([parse_jwk(ec_jwk)]),
        lambda: ec_pub.verify(der, si, ecdsa),
        2000,
    )


if __name__ == "__main__":
    main()
