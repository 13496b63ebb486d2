"""Project Wycheproof vectors through parse_jwk and verify_signature, one test id per case.

Policy per file kind (see shared/vectors/README.md):
* valid must verify, invalid must not; acceptable is not asserted (only the
  PKCS#1 `MissingNull` case, which `cryptography` rejects).
* ECDSA groups without a JWK get one built from publicKey.wx/wy.
* RSA groups with e = 3 load: we refuse only e < 3 and even e, so their
  valid signatures must verify (asserted by the generic rule).
* HMAC (RFC 7518 §3.2: full tag, key at least the hash size), per group:
  key < 32 bytes           -> hmac_key must refuse the key;
  key < hash size (>= 32)  -> the key must not fit the alg, verify is False;
  tag shorter than hash    -> must be rejected, whatever Wycheproof says
                              (a truncated tag is never a JWS signature);
  otherwise                -> valid/invalid as Wycheproof says.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jose_testkit import b64u, vectors_dir

from gateway.jose.algorithms import verify_signature
from gateway.jose.jwk import Jwk, JwkError, hmac_key, parse_jwk

# The files and their numberOfTests, from shared/vectors/README.md: a missing or
# truncated file fails instead of silently shrinking the suite.
EXPECTED: dict[str, tuple[str, int]] = {
    "ecdsa_secp256r1_sha256_p1363_test.json": ("ES256", 262),
    "ecdsa_secp384r1_sha384_p1363_test.json": ("ES384", 280),
    "ecdsa_secp521r1_sha512_p1363_test.json": ("ES512", 318),
    "rsa_signature_2048_sha256_test.json": ("RS256", 259),
    "rsa_signature_2048_sha384_test.json": ("RS384", 258),
    "rsa_signature_2048_sha512_test.json": ("RS512", 259),
    "rsa_signature_3072_sha256_test.json": ("RS256", 259),
    "rsa_signature_3072_sha384_test.json": ("RS384", 259),
    "rsa_signature_3072_sha512_test.json": ("RS512", 260),
    "rsa_signature_4096_sha256_test.json": ("RS256", 258),
    "rsa_signature_4096_sha384_test.json": ("RS384", 259),
    "rsa_signature_4096_sha512_test.json": ("RS512", 259),
    "rsa_pss_2048_sha256_mgf1_32_test.json": ("PS256", 108),
    "rsa_pss_2048_sha384_mgf1_48_test.json": ("PS384", 141),
    "rsa_pss_3072_sha256_mgf1_32_test.json": ("PS256", 108),
    "rsa_pss_4096_sha512_mgf1_64_test.json": ("PS512", 179),
    "ed25519_test.json": ("EdDSA", 151),
    "ed448_test.json": ("EdDSA", 87),
    "hmac_sha256_test.json": ("HS256", 174),
    "hmac_sha384_test.json": ("HS384", 174),
    "hmac_sha512_test.json": ("HS512", 174),
}

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    alg: str
    group: int
    tc: dict[str, Any]


def _wycheproof_dir() -> Path:
    return vectors_dir() / "wycheproof"


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_wycheproof_dir() / name).read_text(encoding="utf-8"))
    return data


def _cases() -> list[Any]:
    params: list[Any] = []
    for name, (alg, _) in EXPECTED.items():
        try:
            data = _load(name)
        except (OSError, ValueError):
            # Fail loudly (see test_vector_files_present), never skip silently.
            params.append(pytest.param(None, id=f"{name.removesuffix('_test.json')}-MISSING"))
            continue
        for gi, group in enumerate(data["testGroups"]):
            for tc in group["tests"]:
                params.append(
                    pytest.param(Case(name, alg, gi, tc), id=f"{name.removesuffix('_test.json')}-tc{tc['tcId']}")
                )
    return params


CASES = _cases()


def test_vector_files_present_and_intact() -> None:
    directory = _wycheproof_dir()
    assert directory.is_dir(), f"Wycheproof vectors not found at {directory}"
    sums = {}
    for line in (directory.parent / "SHA256SUMS").read_text().splitlines():
        digest, _, path = line.partition("  ")
        sums[path.strip().removeprefix("./")] = digest
    for name in EXPECTED:
        data = (directory / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sums[f"wycheproof/{name}"], name


def test_case_counts_match_number_of_tests() -> None:
    run = Counter(p.values[0].file for p in CASES if p.values[0] is not None)
    for name, (_, expected) in EXPECTED.items():
        assert _load(name)["numberOfTests"] == expected, name
        assert run[name] == expected, name


def _group_key(case: Case) -> Jwk:
    group = _load(case.file)["testGroups"][case.group]
    jwk = group.get("publicKeyJwk") or group.get("keyJwk")
    if jwk is None:
        # The "r = ..., x = ..." arithmetic groups carry no JWK; wx/wy are already
        # left-padded to the coordinate size (README), so they are the JWK x/y.
        pk = group["publicKey"]
        crv, size = _CURVES[pk["curve"]]
        x, y = bytes.fromhex(pk["wx"]), bytes.fromhex(pk["wy"])
        assert len(x) == len(y) == size
        jwk = {"kty": "EC", "crv": crv, "x": b64u(x), "y": b64u(y)}
    return parse_jwk(jwk)


def _check_hmac(case: Case) -> None:
    group = _load(case.file)["testGroups"][case.group]
    tc = case.tc
    key_bytes = bytes.fromhex(tc["key"])
    tag = bytes.fromhex(tc["tag"])
    msg = bytes.fromhex(tc["msg"])
    hash_len = {"HS256": 32, "HS384": 48, "HS512": 64}[case.alg]
    assert len(key_bytes) * 8 == group["keySize"]
    if len(key_bytes) < 32:
        with pytest.raises(JwkError):
            hmac_key(key_bytes)
        return
    key = hmac_key(key_bytes)
    if len(key_bytes) < hash_len:
        assert not key.fits(case.alg)
        assert not verify_signature(case.alg, key, msg, tag)
        return
    if group["tagSize"] < hash_len * 8:
        assert not verify_signature(case.alg, key, msg, tag)
        return
    if tc["result"] != "acceptable":
        assert verify_signature(case.alg, key, msg, tag) is (tc["result"] == "valid")


@pytest.mark.parametrize("case", CASES)
def test_wycheproof(case: Case | None) -> None:
    assert case is not None, "vector file missing or unreadable"
    if case.alg.startswith("HS"):
        _check_hmac(case)
        return
    key = _group_key(case)
    tc = case.tc
    ok = verify_signature(case.alg, key, bytes.fromhex(tc["msg"]), bytes.fromhex(tc["sig"]))
    if tc["result"] == "valid":
        assert ok
    elif tc["result"] == "invalid":
        assert not ok
    # "acceptable": either answer is allowed, nothing asserted.


def test_rsa_e3_keys_load() -> None:
    """Policy: we refuse e < 3 and even e; e = 3 (Wycheproof SmallPublicKey) loads and verifies."""
    found = 0
    for name in EXPECTED:
        if not name.startswith("rsa_signature_"):
            continue
        for group in _load(name)["testGroups"]:
            if group["keyJwk"]["e"] == "Aw":
                key = parse_jwk(group["keyJwk"])
                assert key.fits(group["keyJwk"]["alg"])
                found += 1
    assert found == 5  # 2048_sha256 (2 groups), 2048_sha512, 3072_sha256, 3072_sha512 (README)
