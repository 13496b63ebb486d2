"""Fuzz JWE parsing and decryption: nothing decrypts unless it was encrypted to a configured key.

Input: the first byte picks a mode.
- even: the rest is the token text (latin-1), unwrapped as it is;
- odd: `alg-index, enc-index, plaintext`: we encrypt the fuzzed plaintext to one of
  our keys with a reference library (joserfc), so decryption and the nested-JWT
  checks are reached, not only the parser.

Invariants: `unwrap_nested_jws` raises TokenError with a reason of the JWE's closed
set, and every fault after the header is the one `decrypt_failed` with one sentence
(no padding/tag oracle); a token it unwraps also decrypts with the reference library
under our key to the same inner JWS; and a JWE we made ourselves round-trips (it is
refused only when its plaintext is not a compact JWS).
"""

from __future__ import annotations

import warnings
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwe as reference_jwe
from joserfc import jwk as reference_jwk

from fuzz.common import Reader, b64u, b64u_int
from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe import JwePolicy, unwrap_nested_jws
from gateway.jose.jwe_keys import parse_decryption_jwk_set

_EC = ec.derive_private_key(0x0E2C_F022_0002_2026_1234_5678_9ABC_DEF0, ec.SECP256R1())
_PUB = _EC.public_key().public_numbers()
JWKS: dict[str, dict[str, Any]] = {
    "ec-enc": {
        "kty": "EC", "crv": "P-256", "kid": "ec-enc", "x": b64u_int(_PUB.x, 32), "y": b64u_int(_PUB.y, 32),
        "d": b64u_int(_EC.private_numbers().private_value, 32),
    },
    "kw-1": {"kty": "oct", "kid": "kw-1", "alg": "A256KW", "k": b64u(bytes(range(32)))},
}  # fmt: skip
KEYS, _ = parse_decryption_jwk_set({"keys": list(JWKS.values())})
ALGS = ("ECDH-ES", "ECDH-ES+A128KW", "A256KW", "RSA-OAEP-256", "dir")
ENCS = ("A256GCM", "A128CBC-HS256", "A128GCM")
POLICY = JwePolicy(algorithms=frozenset(ALGS[:3]), encryption=frozenset(ENCS[:2]))
REASONS = frozenset(
    {Reason.MALFORMED, Reason.TOO_LARGE, Reason.UNSUPPORTED_CRIT, Reason.ALG_NOT_ALLOWED, Reason.BAD_TYPE, Reason.DECRYPT_FAILED}
)
_REFERENCE_KEYS = {kid: reference_jwk.import_key(jwk) for kid, jwk in JWKS.items()}


def _encrypt(alg: str, enc: str, plaintext: bytes) -> str:
    kid = "kw-1" if alg == "A256KW" else "ec-enc"
    header = {"alg": alg, "enc": enc, "kid": kid, "cty": "JWT"}
    return reference_jwe.encrypt_compact(header, plaintext, _REFERENCE_KEYS[kid], algorithms=[alg, enc])


def _reference_plaintext(token: str, alg: str, enc: str) -> bytes | None:
    for key in _REFERENCE_KEYS.values():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = reference_jwe.decrypt_compact(token, key, algorithms=[alg, enc])
        except Exception:  # noqa: S112 - any refusal means "not under this key"
            continue
        if out.plaintext is not None:
            return bytes(out.plaintext)
    return None


def check(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.byte()
    made: bytes | None = None
    if mode % 2 == 0:
        token = reader.rest().decode("latin-1")
    else:
        alg, enc = ALGS[reader.byte() % 3], ENCS[reader.byte() % 2]
        made = reader.rest()
        token = _encrypt(alg, enc, made)
    try:
        nested = unwrap_nested_jws(token, KEYS, POLICY)
    except TokenError as exc:
        assert exc.reason in REASONS, f"reason {exc.reason} outside the JWE's closed set"
        if exc.reason is Reason.DECRYPT_FAILED:
            assert exc.description == DECRYPT_FAILED_DESCRIPTION, "a decryption failure that says more than one sentence"
        if made is not None:
            wellformed = made.isascii() and made.count(b".") == 2
            assert exc.reason is Reason.MALFORMED and not wellformed, f"our own JWE refused: {exc.reason}"
        return
    header = nested.header
    plaintext = _reference_plaintext(token, header["alg"], header["enc"])
    assert plaintext is not None, "unwrapped a JWE the reference cannot decrypt under our keys"
    assert plaintext.decode("ascii") == nested.jws, "the inner JWS differs from the reference plaintext"
    if made is not None:
        assert nested.jws.encode() == made, "our own JWE did not round-trip"
