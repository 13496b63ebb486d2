"""Wycheproof primitive vectors through the JWE layer's own primitive functions, one test id per case.

Per file (see tests/vectors/README.md, section 3):
* aes_wrap: `aes_unwrap` (A*KW). valid unwraps to msg, invalid is refused; acceptable not asserted.
* aes_gcm: `aes_gcm_decrypt`. Groups with a 96-bit IV and 128-bit tag as Wycheproof says; any
  other IV size is not a JWE IV (RFC 7518 §5.3) and must be refused even where GCM allows it.
* a*cbc_hs*: `cbc_hmac_decrypt` (RFC 7518 §5.2).
* rsa_oaep sha1 / sha256: `parse_decryption_jwk` + `rsa_oaep_decrypt`; a case encrypted under a
  non-empty OAEP label is refused (JWE uses none).
* ecdh_*_webcrypto: the private JWK through `parse_decryption_jwk`, the public one through
  `ephemeral_public_key` (the on-curve check), then `ecdh_shared_secret`: valid gives `shared`,
  invalid (off-curve, wrong curve, invalid public) is refused.
* x25519_jwk: the same for X25519; acceptable (low-order, twist...) not asserted beyond
  "never a wrong secret".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from jose_testkit import wycheproof

from gateway.jose.jwe import ephemeral_public_key
from gateway.jose.jwe_algorithms import (
    CONTENT_ENCRYPTION,
    KEY_MANAGEMENT,
    CryptoFailure,
    aes_gcm_decrypt,
    aes_unwrap,
    cbc_hmac_decrypt,
    ecdh_shared_secret,
    rsa_oaep_decrypt,
)
from gateway.jose.jwe_keys import parse_decryption_jwk
from gateway.jose.jwk import JwkError

FILES = {
    "aes_wrap_test.json": 165,
    "aes_gcm_test.json": 316,
    "a128cbc_hs256_test.json": 94,
    "a192cbc_hs384_test.json": 94,
    "a256cbc_hs512_test.json": 94,
    "rsa_oaep_2048_sha1_mgf1sha1_test.json": 36,
    "rsa_oaep_2048_sha256_mgf1sha256_test.json": 37,
    "ecdh_secp256r1_webcrypto_test.json": 353,
    "ecdh_secp384r1_webcrypto_test.json": 794,
    "ecdh_secp521r1_webcrypto_test.json": 655,
    "x25519_jwk_test.json": 531,
}
_CBC = {
    "a128cbc_hs256_test.json": "A128CBC-HS256",
    "a192cbc_hs384_test.json": "A192CBC-HS384",
    "a256cbc_hs512_test.json": "A256CBC-HS512",
}
_OAEP = {"rsa_oaep_2048_sha1_mgf1sha1_test.json": "RSA-OAEP", "rsa_oaep_2048_sha256_mgf1sha256_test.json": "RSA-OAEP-256"}


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    group: dict[str, Any]
    tc: dict[str, Any]


CASES = [
    Case(name, {k: v for k, v in group.items() if k != "tests"}, tc)
    for name in FILES
    for group in wycheproof(name)["testGroups"]
    for tc in group["tests"]
]


def _id(case: Case) -> str:
    return f"{case.file.removesuffix('_test.json')}-{case.tc['tcId']}"


def test_files_are_complete() -> None:
    for name, count in FILES.items():
        assert wycheproof(name)["numberOfTests"] == count
        assert sum(c.file == name for c in CASES) == count


def _h(name: str, tc: dict[str, Any]) -> bytes:
    return bytes.fromhex(tc[name])


def _run(case: Case) -> bytes | None:
    """The primitive's answer: bytes, or None when it refused."""
    tc, name = case.tc, case.file
    try:
        if name == "aes_wrap_test.json":
            return aes_unwrap(_h("key", tc), _h("ct", tc))
        if name == "aes_gcm_test.json":
            return aes_gcm_decrypt(_h("key", tc), _h("iv", tc), _h("ct", tc), _h("tag", tc), _h("aad", tc))
        if name in _CBC:
            enc = CONTENT_ENCRYPTION[_CBC[name]]
            return cbc_hmac_decrypt(enc, _h("key", tc), _h("iv", tc), _h("ct", tc), _h("tag", tc), _h("aad", tc))
        if name in _OAEP:
            key = parse_decryption_jwk(_oaep_jwk(case))
            oaep_hash = KEY_MANAGEMENT[_OAEP[name]].oaep_hash
            assert oaep_hash is not None and not isinstance(key.key, bytes)
            return rsa_oaep_decrypt(key.key, oaep_hash, _h("ct", tc))  # type: ignore[arg-type]
        # ECDH (EC webcrypto and X25519 JWK files): our private-key loader, our epk check, our agreement.
        private = parse_decryption_jwk(tc["private"])
        peer = ephemeral_public_key(tc["public"], private)
        assert not isinstance(private.key, (bytes,))
        return ecdh_shared_secret(private.key, peer)  # type: ignore[arg-type]
    except (CryptoFailure, JwkError):
        return None


def _oaep_jwk(case: Case) -> dict[str, Any]:
    jwk = case.group["privateKeyJwk"]
    assert isinstance(jwk, dict)
    return jwk


def _expected(case: Case) -> bytes:
    tc = case.tc
    return bytes.fromhex(tc["shared"] if "shared" in tc else tc["msg"])


def _must_refuse_anyway(case: Case) -> str | None:
    """Why a Wycheproof-valid case is not valid in JWE (and must be refused), or None."""
    if case.file == "aes_gcm_test.json" and (case.group["ivSize"] != 96 or case.group["tagSize"] != 128):
        return "JWE's AES-GCM IV is exactly 96 bits and its tag 128 bits (RFC 7518 §5.3)"
    if case.file in _OAEP and case.tc.get("label"):
        return "JWE's RSA-OAEP uses an empty label (RFC 7518 §4.3)"
    return None


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_primitive_vector(case: Case) -> None:
    result = case.tc["result"]
    got = _run(case)
    if _must_refuse_anyway(case) is not None:
        assert got is None
    elif result == "valid":
        assert got == _expected(case)
    elif result == "invalid":
        assert got is None
    else:
        # acceptable: either answer, but never a wrong one.
        assert got is None or got == _expected(case)


def test_invalid_curve_points_are_refused_before_agreement() -> None:
    """Every InvalidCurveAttack / off-curve public point fails in ephemeral_public_key itself,
    i.e. before any scalar multiplication with our private key."""
    seen = 0
    for case in CASES:
        if "ecdh_" not in case.file or "InvalidCurveAttack" not in case.tc["flags"]:
            continue
        seen += 1
        private = parse_decryption_jwk(case.tc["private"])
        with pytest.raises(CryptoFailure):
            ephemeral_public_key(case.tc["public"], private)
    assert seen > 0


def test_counts() -> None:
    gcm_jwe = [c for c in CASES if c.file == "aes_gcm_test.json" and _must_refuse_anyway(c) is None]
    assert len(gcm_jwe) == sum(
        len(g["tests"]) for g in wycheproof("aes_gcm_test.json")["testGroups"] if g["ivSize"] == 96 and g["tagSize"] == 128
    )
