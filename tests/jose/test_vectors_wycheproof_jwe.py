"""Wycheproof JWE vectors through the gateway's own JWE code, one test id per case.

`json_web_encryption_test.json` (139 cases) and the JWE groups of
`json_web_crypto_test.json` (34 cases) go through `parse_decryption_jwk` +
`parse_jwe` + `decrypt_jwe`, the same calls the request path makes: valid
decrypts to `pt`, invalid is refused.  Cases we refuse by policy although
Wycheproof calls them valid (RSA1_5, `zip`, JSON serialization) are excluded
from the generic test and each listed, with the reason, in one named test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from jose_testkit import wycheproof

from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwe import JwePolicy, decrypt_jwe, parse_jwe
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk
from gateway.jose.jwk import JwkError

# Everything the tables hold: the vectors exercise each alg/enc, not our allow-list.
ALL = JwePolicy(frozenset(KEY_MANAGEMENT), frozenset(CONTENT_ENCRYPTION))
FILES = {"json_web_encryption_test.json": 139, "json_web_crypto_test.json": 83}

# Valid per RFC, refused by policy: case -> why.  Listed, asserted refused, never silently skipped.
RSA1_5_VALID = {
    ("json_web_encryption_test.json", tc): "RSA1_5 is never supported (padding oracle, RFC 8725 §3.2)"
    for tc in (100, 101, 102, 103, 104, 105, 112, 128)
}
ZIP_VALID = {("json_web_encryption_test.json", 135): "zip (compression before encryption) is never accepted"}
POLICY_REFUSED = RSA1_5_VALID | ZIP_VALID


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    private: dict[str, Any]
    tc: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, int(self.tc["tcId"]))


def _cases() -> list[Case]:
    out = []
    for name in FILES:
        for group in wycheproof(name)["testGroups"]:
            for tc in group["tests"]:
                if "jwe" in tc:
                    out.append(Case(name, group["private"], tc))
    return out


CASES = _cases()


def _decrypt(case: Case) -> bytes:
    keys = DecryptionKeySet([parse_decryption_jwk(case.private)])
    token = case.tc["jwe"]
    if not isinstance(token, str):
        raise TypeError("JSON serialization")
    return decrypt_jwe(parse_jwe(token), keys, ALL)


def test_files_are_complete() -> None:
    for name, count in FILES.items():
        data = wycheproof(name)
        assert data["numberOfTests"] == count
        assert sum(len(g["tests"]) for g in data["testGroups"]) == count
    # 139 JWE cases in the first file, 34 in the JWE groups of the second.
    assert sum(c.file == "json_web_encryption_test.json" for c in CASES) == 139
    assert sum(c.file == "json_web_crypto_test.json" for c in CASES) == 34


def _id(case: Case) -> str:
    return f"{case.file.removesuffix('_test.json')}-{case.tc['tcId']}-{case.tc['comment']}"


@pytest.mark.parametrize("case", [c for c in CASES if c.key not in POLICY_REFUSED], ids=_id)
def test_wycheproof_jwe(case: Case) -> None:
    token = case.tc["jwe"]
    if case.tc["result"] == "valid":
        assert isinstance(token, str)
        plaintext = _decrypt(case)
        # json_web_crypto_test.json gives no `pt`: there, decrypting at all is the assertion.
        assert plaintext.hex() == case.tc.get("pt", plaintext.hex()) and plaintext
        return
    assert case.tc["result"] == "invalid"
    if not isinstance(token, str):
        # JSON serialization: not a string token at all; as text, not five segments.
        with pytest.raises(TokenError) as exc:
            parse_jwe(json.dumps(token))
        assert exc.value.reason is Reason.MALFORMED
        return
    if case.private.get("alg") == "RSA1_5":
        # Our key loader refuses the whole group's key (see the policy test); the token
        # cannot even be tried, which is the strongest refusal there is.
        with pytest.raises(JwkError):
            parse_decryption_jwk(case.private)
        return
    with pytest.raises(TokenError) as exc:
        _decrypt(case)
    # Structure faults are malformed; header policy (RSA1_5 alg) is alg_not_allowed; the rest,
    # from the key to the last byte, is the one reason with the one sentence.
    assert exc.value.reason in (Reason.MALFORMED, Reason.ALG_NOT_ALLOWED, Reason.DECRYPT_FAILED)
    if exc.value.reason is Reason.DECRYPT_FAILED:
        assert exc.value.description == "The encrypted token could not be decrypted."


def test_refused_by_policy_though_valid_per_rfc() -> None:
    """The Wycheproof-valid cases we refuse on purpose, each with its reason."""
    by_key = {c.key: c for c in CASES}
    assert set(POLICY_REFUSED) <= set(by_key)
    for key, why in RSA1_5_VALID.items():
        case = by_key[key]
        assert case.tc["result"] == "valid", why
        # 1. A key declared for RSA1_5 does not load.
        with pytest.raises(JwkError, match="RSA1_5 is never supported"):
            parse_decryption_jwk(case.private)
        # 2. The same key without its alg loads as an RSA-OAEP key; the token is still refused
        #    from its header alone, before the private key is touched.
        lenient = {k: v for k, v in case.private.items() if k != "alg"}
        keys = DecryptionKeySet([parse_decryption_jwk(lenient)])
        with pytest.raises(TokenError) as exc:
            decrypt_jwe(parse_jwe(case.tc["jwe"]), keys, ALL)
        assert exc.value.reason is Reason.ALG_NOT_ALLOWED, why
    # JSON serialization: compact only. Wycheproof marks these invalid too; listed here for the record.
    json_serialized = [c for c in CASES if "JsonSerialization" in c.tc["flags"]]
    assert [(c.file, c.tc["tcId"]) for c in json_serialized] == [
        ("json_web_encryption_test.json", 22),
        ("json_web_crypto_test.json", 66),
    ]
    for case in json_serialized:
        token = case.tc["jwe"] if isinstance(case.tc["jwe"], str) else json.dumps(case.tc["jwe"])
        with pytest.raises(TokenError) as exc:
            parse_jwe(token)
        assert exc.value.reason is Reason.MALFORMED, "compact serialization only"
    for key, why in ZIP_VALID.items():
        case = by_key[key]
        assert case.tc["result"] == "valid" and "CompressedPlaintext" in case.tc["flags"], why
        with pytest.raises(TokenError) as exc:
            _decrypt(case)
        assert exc.value.reason is Reason.ALG_NOT_ALLOWED
        assert "zip" in exc.value.description


def test_counts() -> None:
    """The closing-note numbers: how many of each kind, and that nothing else is special-cased."""
    valid = [c for c in CASES if c.tc["result"] == "valid"]
    json_ser = [c for c in CASES if "JsonSerialization" in c.tc["flags"]]
    assert len(valid) == 65 + 2  # 65 in the JWE file, 2 in the crypto file
    assert len(valid) - len(POLICY_REFUSED) == 58  # decrypted (56 compared with pt)
    assert len(json_ser) == 2 and all(c.tc["result"] == "invalid" for c in json_ser)
