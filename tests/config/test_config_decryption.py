"""The `decryption` block and `issuers[].require_encryption`: valid forms, and every mistake with key path and line."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.config.helpers import ISSUER, doc, marked_line, only_issue, parse

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(v: int, size: int | None = None) -> str:
    return _b64(v.to_bytes(size or (v.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    n = key.private_numbers()
    pub = n.public_numbers
    return {
        "kty": "RSA", "n": _int(pub.n), "e": _int(pub.e), "d": _int(n.d), "p": _int(n.p), "q": _int(n.q),
        "dp": _int(n.dmp1), "dq": _int(n.dmq1), "qi": _int(n.iqmp), **extra,
    }  # fmt: skip


def ec_jwk(key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    pub = key.public_key().public_numbers()
    return {
        "kty": "EC", "crv": "P-256", "x": _int(pub.x, 32), "y": _int(pub.y, 32),
        "d": _int(key.private_numbers().private_value, 32), **extra,
    }  # fmt: skip


def block(algs: str = "[RSA-OAEP-256, ECDH-ES+A256KW]", encs: str = "[A256GCM]", keys: str = "{file: keys.json}") -> str:
    return f"decryption:\n  keys: {keys}\n  algorithms: {algs}\n  encryption: {encs}\n"


def with_keys(tmp_path: Path, *jwks: dict[str, Any]) -> Path:
    (tmp_path / "keys.json").write_text(json.dumps({"keys": list(jwks)}))
    return tmp_path


def test_a_valid_block_from_a_file_and_from_env(tmp_path: Path) -> None:
    base = with_keys(tmp_path, rsa_jwk(_RSA, kid="r"), ec_jwk(_EC, kid="e", alg="ECDH-ES+A256KW"))
    cfg = parse(ISSUER + "    require_encryption: true\n" + block(), base_dir=base)
    assert cfg.decryption is not None
    assert cfg.decryption.kind == "file" and cfg.decryption.location == str(tmp_path / "keys.json")
    assert cfg.decryption.algorithms == ("RSA-OAEP-256", "ECDH-ES+A256KW")
    assert cfg.issuers[0].require_encryption is True
    env = {"JWE_KEYS": json.dumps({"keys": [rsa_jwk(_RSA)]})}
    cfg = parse(block("[RSA-OAEP]", keys="{env: JWE_KEYS}"), environ=env)
    assert cfg.decryption is not None and cfg.decryption.kind == "env" and cfg.decryption.location == "JWE_KEYS"
    # Absent: no decryption, and require_encryption defaults to false.
    cfg = parse(ISSUER)
    assert cfg.decryption is None and cfg.issuers[0].require_encryption is False


KEY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("public_key", {k: v for k, v in rsa_jwk(_RSA).items() if k in ("kty", "n", "e")}, "key #0: the JWK is a public key"),
    ("alg_unfit", rsa_jwk(_RSA, alg="ECDH-ES"), "key #0: the key's 'alg' 'ECDH-ES' does not fit the key"),
    ("rsa_small", rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "shorter than 2048 bits"),
    ("oct_wrong_length_for_alg", {"kty": "oct", "k": _b64(bytes(16)), "alg": "A256KW"}, "'A256KW' does not fit the key"),
    ("oct_no_alg_fits", {"kty": "oct", "k": _b64(bytes(20))}, "long for no JWE algorithm"),
    ("rsa1_5_key", rsa_jwk(_RSA, alg="RSA1_5"), "RSA1_5 is never supported"),
    ("ec_mismatch", {**ec_jwk(_EC), "d": ec_jwk(ec.generate_private_key(ec.SECP256R1()))["d"]}, "does not match its public point"),
    ("signing_key", {"kty": "OKP", "crv": "Ed25519", "x": _b64(bytes(32)), "d": _b64(bytes(32))}, "not X25519"),
]


@pytest.mark.parametrize(("jwk", "message"), [(j, m) for _, j, m in KEY_CASES], ids=[c[0] for c in KEY_CASES])
def test_bad_keys_are_explained_at_the_keys_line(tmp_path: Path, jwk: dict[str, Any], message: str) -> None:
    text = doc(block("[RSA-OAEP-256]", keys="{file: keys.json}  # <-"))
    issue = only_issue(text, base_dir=with_keys(tmp_path, jwk))
    assert issue.path == "decryption.keys.file"
    assert issue.line == marked_line(text)
    assert message in issue.message
    assert "AQAB" not in issue.message and jwk.get("d", "~") not in issue.message  # no key material


CASES: list[tuple[str, str, str, str]] = [
    ("rsa1_5_alg", block("[RSA-OAEP-256, RSA1_5]  # <-"), "decryption.algorithms[1]", "padding oracle"),
    ("pbes2_alg", block("[PBES2-HS256+A128KW]  # <-"), "decryption.algorithms[0]", "password-based"),
    ("unknown_alg", block("[RSA-OAEP-512]  # <-"), "decryption.algorithms[0]", "unknown key-management algorithm"),
    ("unknown_enc", block(encs="[A256GCM, A512GCM]  # <-"), "decryption.encryption[1]", "unknown content-encryption"),
    ("alg_without_key", block("[RSA-OAEP-256, A128KW]  # <-"), "decryption.algorithms", "A128KW: no key"),
    ("two_sources", block(keys="{file: keys.json, env: X}  # <-"), "decryption.keys.file", "exactly one of env, file"),
    ("inline_keys", block(keys="[{kty: oct, k: AAAA}]  # <-"), "decryption.keys", "never inline"),
    ("missing_enc", "decryption:  # <-\n  keys: {file: keys.json}\n  algorithms: [RSA-OAEP-256]\n",
        "decryption.encryption", "missing required key 'encryption'"),
    ("env_unset", block("[RSA-OAEP-256]", keys="{env: NOPE}  # <-"), "decryption.keys.env", "NOPE is not set"),
    ("require_without_block", ISSUER + "    require_encryption: true  # <-\n", "issuers[0].require_encryption",
        "needs a top-level decryption block"),
    ("require_not_bool", ISSUER + "    require_encryption: yes please  # <-\n", "issuers[0].require_encryption",
        "must be true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistakes_have_path_and_line(tmp_path: Path, text: str, path: str, message: str) -> None:
    base = with_keys(tmp_path, rsa_jwk(_RSA), ec_jwk(_EC))
    text = doc(text)
    issue = only_issue(text, base_dir=base)
    assert (issue.path, issue.line) == (path, marked_line(text))
    assert message in issue.message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    text = doc(block(keys="{file: nowhere.json}  # <-"))
    issue = only_issue(text, base_dir=tmp_path)
    assert issue.path == "decryption.keys.file" and "does not exist" in issue.message
