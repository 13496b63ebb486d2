"""Fuzz the JWS parser and verifier: no token is accepted unless a configured key signed it.

Input: the first byte picks a mode.
- even: the rest is the token text (latin-1), verified as it is;
- odd: `alg-index, key-index, header JSON, NUL, payload JSON`: the fuzzer writes the
  header and claims and we sign them with one of our keys (maybe for another alg),
  so the claim checks and algorithm/key confusion are reached, not only the parser.

Invariant: `verify_compact` either raises TokenError with a reason of the closed set,
or returns, and then an independent reference (direct `cryptography` / `hmac` calls
written here, not the gateway's algorithm table) confirms that the exact signing
input was signed by a configured key with the header's allowed alg, and that the
claims hold at the pinned clock.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from fuzz.common import (
    AUDIENCE,
    EC_KEY,
    ED_KEY,
    HS_SECRET,
    ISSUER,
    NOW,
    Reader,
    b64u,
    b64u_int,
    ec_public_jwk,
    ed_public_jwk,
)
from gateway.jose.claims import ClaimPolicy
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import KeySet, hmac_key, parse_jwk
from gateway.jose.verifier import VerifyPolicy, verify_compact

ALGS = ("HS256", "RS256", "PS256", "ES256", "EdDSA", "none", "HS384", "ES384")
SKEW = 30
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _rsa_jwk() -> dict[str, Any]:
    pub = RSA_KEY.public_key().public_numbers()
    return {"kty": "RSA", "kid": "rsa-1", "n": b64u_int(pub.n, 256), "e": b64u_int(pub.e, 3)}


KEYS = KeySet([parse_jwk(ec_public_jwk()), parse_jwk(ed_public_jwk()), parse_jwk(_rsa_jwk()), hmac_key(HS_SECRET, kid="hs-1")])
POLICY = VerifyPolicy(
    algorithms=frozenset({"HS256", "RS256", "PS256", "ES256", "EdDSA"}),
    claims=ClaimPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}), clock_skew=SKEW, max_lifetime=86400),
)


def _sign(alg: str, key_index: int, signing_input: bytes) -> bytes:
    key = key_index % 4
    if key == 0:
        return hmac.digest(HS_SECRET, signing_input, "sha256")
    if key == 1:
        if alg.startswith("PS"):
            return RSA_KEY.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        return RSA_KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if key == 2:
        r, s = decode_dss_signature(EC_KEY.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return ED_KEY.sign(signing_input)


def _reference_signed(alg: str, signing_input: bytes, signature: bytes) -> bool:
    """True when one of our keys signed `signing_input` under `alg` (written independently of gateway.jose)."""
    try:
        if alg == "HS256":
            return hmac.compare_digest(hmac.digest(HS_SECRET, signing_input, "sha256"), signature)
        if alg == "RS256":
            RSA_KEY.public_key().verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
        if alg == "PS256":
            RSA_KEY.public_key().verify(
                signature, signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()
            )
            return True
        if alg == "ES256":
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            EC_KEY.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "EdDSA":
            ED_KEY.public_key().verify(signature, signing_input)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _reference_claims_hold(claims: dict[str, Any]) -> bool:
    exp, iat, nbf = claims.get("exp"), claims.get("iat", NOW), claims.get("nbf", NOW)
    aud = claims.get("aud")
    return (
        claims.get("iss") == ISSUER
        and (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud))
        and _number(exp) and exp > NOW - SKEW  # type: ignore[operator]
        and _number(iat) and iat <= NOW + SKEW  # type: ignore[operator]
        and _number(nbf) and nbf <= NOW + SKEW  # type: ignore[operator]
        and exp - claims.get("iat", NOW) <= 86400  # type: ignore[operator]
    )


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _token(data: bytes) -> str:
    reader = Reader(data)
    mode = reader.byte()
    if mode % 2 == 0:
        return reader.rest().decode("latin-1")
    alg = ALGS[reader.byte() % len(ALGS)]
    key_index = reader.byte()
    header, payload = reader.chunk(), reader.rest()
    signing_input = (b64u(header) + "." + b64u(payload)).encode("ascii")
    return signing_input.decode("ascii") + "." + b64u(_sign(alg, key_index, signing_input))


def check(data: bytes) -> None:
    token = _token(data)
    try:
        parsed, _key = verify_compact(token, POLICY, KEYS, NOW)
    except TokenError as exc:
        assert isinstance(exc.reason, Reason), exc
        return
    # Accepted: the reference must agree on every point.
    head, payload_b64, sig_b64 = token.split(".")
    header = json.loads(_b64decode(head))
    alg = header["alg"]
    assert alg in POLICY.algorithms, f"accepted alg {alg!r} outside the allow-list"
    signing_input = f"{head}.{payload_b64}".encode("ascii")
    assert parsed.jws.signing_input == signing_input, "signing input differs from the received octets"
    assert _reference_signed(alg, signing_input, _b64decode(sig_b64)), "accepted a token no configured key signed"
    claims = json.loads(_b64decode(payload_b64))
    assert claims == parsed.claims, "parsed claims differ from the payload"
    assert _reference_claims_hold(claims), "accepted claims the policy refuses"
    assert token.isascii(), "accepted a token with non-ASCII characters"
