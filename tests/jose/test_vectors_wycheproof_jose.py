"""Wycheproof's JOSE-level JWS cases through the gateway's own path, one test id per case.

Files (tests/vectors/README.md, section 3): json_web_signature_test.json (all 401),
json_web_key_test.json (all 26) and the JWS groups of json_web_crypto_test.json (49;
its JWE groups belong to the JWE tests).

Each case goes through what a request does with a token: `parse_jws` (strict compact
parsing), the issuer's `alg` allow-list (every supported alg here, so the key rules do
the refusing), and `verify_jws_signature` with keys loaded as the gateway loads them:
- an asymmetric group key as one entry of a JWK Set (`parse_jwk_set`), the public JWK
  when the group has one;
- a group key set of several keys as a JWK Set as published (so `oct` entries are
  skipped: SPEC, HS* only with a configured secret);
- a single `oct` group key (alone or as a one-key set) as a configured HS secret with
  its JWK metadata (`parse_jwk(allow_oct=True)`: at least 32 bytes, only the HS* its
  length allows, and none at all when its `alg`/`use`/`key_ops` say otherwise).
Wycheproof's `valid` must be accepted and `invalid` refused, except the cases listed
in DIFFERENCES, each with the reason; a listed case must still differ, so the list
cannot go stale.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from jose_testkit import wycheproof

from gateway.jose.algorithms import SUPPORTED
from gateway.jose.errors import TokenError
from gateway.jose.jwk import Jwk, JwkError, KeySet, parse_jwk, parse_jwk_set
from gateway.jose.jws import parse_jws
from gateway.jose.verifier import verify_jws_signature

# file -> JWS cases it holds (a missing or truncated file fails, never shrinks the suite)
EXPECTED = {
    "json_web_signature_test.json": 401,
    "json_web_key_test.json": 26,
    "json_web_crypto_test.json": 49,
}

_COMPACT_ONLY = "compact serialization only (SPEC): a JSON-serialized JWS is never a token"
_STRICT_B64 = "strict base64url: a character outside the alphabet makes the token malformed (RFC 7515 §2, RFC 4648 §5)"
_EMPTY_PAYLOAD = "a JWT payload is a JSON object (RFC 7519 §7.2), so an empty payload segment is malformed"
_KEY_ALG = "the key's JWK `alg` names another algorithm than the token's (RFC 7517 §4.4): no cross-alg use"
_SAME_AS_357 = (
    "the published string is byte-identical to tcId 357 (valid, same key): the padding fault "
    "its comment names is not in the vector, so no verifier can both accept 357 and refuse this"
)
_OCT_IN_SET = (
    "two HS keys: HS keys come only from the issuer's one configured secret (SPEC), and `oct` keys "
    "in a JWK Set are skipped"
)

# (file, tcId) -> why our answer differs from Wycheproof's
DIFFERENCES: dict[tuple[str, int], str] = {
    ("json_web_signature_test.json", 259): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 264): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 268): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 272): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 320): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 325): _EMPTY_PAYLOAD,
    ("json_web_signature_test.json", 346): _KEY_ALG,
    ("json_web_signature_test.json", 347): _KEY_ALG,
    ("json_web_signature_test.json", 350): _KEY_ALG,
    ("json_web_signature_test.json", 351): _KEY_ALG,
    ("json_web_signature_test.json", 367): _SAME_AS_357,
    ("json_web_signature_test.json", 370): _SAME_AS_357,
    ("json_web_signature_test.json", 372): _STRICT_B64,
    ("json_web_signature_test.json", 373): _STRICT_B64,
    ("json_web_key_test.json", 2): _OCT_IN_SET,
    ("json_web_crypto_test.json", 48): _OCT_IN_SET,
}


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    group: int
    tc: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, int(self.tc["tcId"]))


def _cases() -> list[Any]:
    params: list[Any] = []
    for name in EXPECTED:
        for gi, group in enumerate(wycheproof(name)["testGroups"]):
            for tc in group["tests"]:
                if "jws" in tc:
                    stem = name.removesuffix("_test.json")
                    params.append(pytest.param(Case(name, gi, tc), id=f"{stem}-tc{tc['tcId']}"))
    return params


CASES = _cases()


def _keys(case: Case) -> KeySet:
    group = wycheproof(case.file)["testGroups"][case.group]
    source = group.get("public") or group["private"]
    entries = source["keys"] if "keys" in source else [source]
    if len(entries) == 1 and entries[0].get("kty") == "oct":
        try:
            return KeySet([parse_jwk(entries[0], allow_oct=True)])
        except JwkError:
            return KeySet([])  # a secret shorter than 32 bytes: `gateway check` refuses it
    keys, _skipped = parse_jwk_set({"keys": entries})
    return keys


def _accepted(case: Case) -> bool:
    token = case.tc["jws"]
    if not isinstance(token, str):
        return False  # a JSON serialization object: not a compact token
    try:
        jws = parse_jws(token)
        if jws.alg not in SUPPORTED:
            return False
        key: Jwk = verify_jws_signature(jws, _keys(case))
    except TokenError:
        return False
    return key is not None


def test_case_counts() -> None:
    counted = Counter(p.values[0].file for p in CASES)
    assert dict(counted) == EXPECTED
    for name in ("json_web_signature_test.json", "json_web_key_test.json"):
        assert wycheproof(name)["numberOfTests"] == EXPECTED[name]


@pytest.mark.parametrize("case", CASES)
def test_wycheproof_jose(case: Case) -> None:
    expected = case.tc["result"] == "valid"
    if case.key in DIFFERENCES:
        assert _accepted(case) is not expected, f"listed difference no longer differs: {DIFFERENCES[case.key]}"
    else:
        assert _accepted(case) is expected


def test_differences_are_listed_with_reasons() -> None:
    """The one place our answers differ from Wycheproof's; every entry names a real case."""
    by_key = {p.values[0].key: p.values[0] for p in CASES}
    for key, reason in DIFFERENCES.items():
        assert key in by_key, key
        assert reason
    # Only stricter, never laxer: every difference is a valid case we refuse, except the
    # two invalid cases whose published string is the valid tcId 357 itself.
    laxer = {k for k in DIFFERENCES if by_key[k].tc["result"] != "valid"}
    assert {k for k in laxer} == {k for k, r in DIFFERENCES.items() if r is _SAME_AS_357}
    first = wycheproof("json_web_signature_test.json")["testGroups"]
    tc357 = next(t for g in first for t in g["tests"] if t["tcId"] == 357)
    for key in laxer:
        assert by_key[key].tc["jws"] == tc357["jws"]


def test_compact_only_cases_are_refused() -> None:
    """JSON-serialized cases (objects, or strings holding JSON) are never tokens; none is valid here."""
    json_cases = [p.values[0] for p in CASES if not isinstance(p.values[0].tc["jws"], str)]
    json_cases += [p.values[0] for p in CASES if isinstance(p.values[0].tc["jws"], str) and p.values[0].tc["jws"][:1] == "{"]
    assert json_cases, _COMPACT_ONLY
    for case in json_cases:
        assert not _accepted(case), _COMPACT_ONLY


def test_roca_keys_refused_atwycheproof() -> None:
    """CVE-2017-15361: the ROCA groups' keys never load, so their tokens cannot verify."""
    found = 0
    for name in EXPECTED:
        for group in wycheproof(name)["testGroups"]:
            if "roca" in group.get("comment", "").lower():
                keys, skipped = parse_jwk_set({"keys": [group["public"]]} if "kty" in group["public"] else group["public"])
                assert len(keys) == 0 and any("ROCA" in s for s in skipped)
                found += 1
    assert found == 2
