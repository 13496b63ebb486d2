"""The fuzz targets' invariants can fail: each oracle catches the bug it exists for."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fuzz import edge, jws, path
from fuzz.common import b64u, b64u_int, claims
from gateway.jose.jwk import KeySet, parse_jwk
from gateway.local_reply import REPLIES


def _foreign_token() -> tuple[str, dict[str, str]]:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64u_int(pub.x, 32), "y": b64u_int(pub.y, 32)}
    signing_input = f"{b64u(json.dumps({'alg': 'ES256', 'kid': 'ec-1'}).encode())}.{b64u(json.dumps(claims()).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}", jwk


def test_jws_oracle_catches_a_verifier_that_trusts_a_foreign_key(monkeypatch: pytest.MonkeyPatch) -> None:
    token, foreign = _foreign_token()
    # Refused as it should be with the configured keys...
    jws.check(b"\x00" + token.encode())
    # ...and flagged when the verifier is handed a key the test config never had.
    monkeypatch.setattr(jws, "KEYS", KeySet([parse_jwk(foreign)]))
    with pytest.raises(AssertionError, match="no configured key signed"):
        jws.check(b"\x00" + token.encode())


def test_path_oracle_catches_a_normalizer_that_keeps_dot_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(path, "normalize_path", lambda raw: raw)
    with pytest.raises(AssertionError, match="dot segment"):
        path.check(b"\x00/a/../admin")


def test_path_reference_examples() -> None:
    assert path._reference("/a/./b/../%63%2f//") == "/a/c%2F/"
    assert path._reference("/..") == "/"


def test_edge_allows_exactly_the_documented_statuses() -> None:
    documented = {row.status for row in REPLIES.values()} - {500}
    assert edge.ALLOWED == documented | {100, 200}
