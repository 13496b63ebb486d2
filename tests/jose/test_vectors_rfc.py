"""JWS examples from RFC 7515, RFC 7520 and RFC 8037 through parse_jws, keys and verify_signature.

These test the signature layer: the payloads are not all JWT claims (and the
RFC 7515 ones expired in 2011), so claims are not checked here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jose_testkit import vectors_dir

from gateway.jose.algorithms import verify_signature
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import KeySet, parse_jwk
from gateway.jose.jws import parse_jws

EXPECTED_FILES = {
    "rfc7515_a1_hs256.json",
    "rfc7515_a2_rs256.json",
    "rfc7515_a3_es256.json",
    "rfc7515_a4_es512.json",
    "rfc7515_a5_none_unsecured.json",
    "rfc7515_e_crit_negative.json",
    "rfc7520_4_1_rs256.json",
    "rfc7520_4_2_ps384.json",
    "rfc7520_4_3_es512.json",
    "rfc7520_4_4_hs256.json",
    "rfc8037_a4_eddsa_ed25519.json",
}
# The negative vectors and the reason parse_jws must give.
REJECTED = {
    "rfc7515_a5_none_unsecured.json": Reason.ALG_NOT_ALLOWED,
    # App. E is also alg none; crit is checked first, so the reason is the crit one.
    "rfc7515_e_crit_negative.json": Reason.UNSUPPORTED_CRIT,
}


def _rfc_dir() -> Path:
    return vectors_dir() / "rfc"


def _jws_files(directory: Path) -> list[Path]:
    # The JWE examples beside them (jwe_compact) are tests/jose/test_vectors_rfc_jwe.py's.
    return [p for p in directory.glob("*.json") if "jws_compact" in p.read_text(encoding="utf-8")]


def _files() -> list[Any]:
    directory = _rfc_dir()
    names = sorted(p.name for p in _jws_files(directory)) if directory.is_dir() else []
    if not names:
        return [pytest.param(None, id="MISSING")]
    return [pytest.param(name, id=name.removesuffix(".json")) for name in names]


def test_rfc_files_present() -> None:
    assert _rfc_dir().is_dir(), f"RFC vectors not found at {_rfc_dir()}"
    assert {p.name for p in _jws_files(_rfc_dir())} == EXPECTED_FILES


@pytest.mark.parametrize("name", _files())
def test_rfc_vector(name: str | None) -> None:
    assert name is not None, "RFC vector directory missing"
    vec = json.loads((_rfc_dir() / name).read_text(encoding="utf-8"))
    token = vec["jws_compact"]
    if not vec["expect_valid"]:
        with pytest.raises(TokenError) as err:
            parse_jws(token)
        assert err.value.reason == REJECTED[name]
        # The same with a non-empty signature: the reason does not hinge on it.
        with pytest.raises(TokenError) as err:
            parse_jws(token + "AAAA")
        assert err.value.reason == REJECTED[name]
        return
    parts = parse_jws(token)
    assert parts.alg == vec["alg"]
    assert token.split(".")[1] == vec["payload_b64url"]
    key = parse_jwk(vec["jwk"], allow_oct=vec["jwk"]["kty"] == "oct")
    (selected,) = KeySet([key]).select(parts.alg, parts.kid)
    assert selected is key
    assert verify_signature(parts.alg, key, parts.signing_input, parts.signature)
    # One flipped bit anywhere in the signature or signing input breaks it.
    flipped_sig = bytes([parts.signature[0] ^ 1]) + parts.signature[1:]
    assert not verify_signature(parts.alg, key, parts.signing_input, flipped_sig)
    flipped_input = parts.signing_input[:-1] + bytes([parts.signing_input[-1] ^ 1])
    assert not verify_signature(parts.alg, key, flipped_input, parts.signature)
