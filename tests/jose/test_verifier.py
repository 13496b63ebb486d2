"""Unit tests for gateway.jose.verifier: typ rules, policy validation and the order of checks."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jose_testkit import Keys, make_token, public_jwk

from gateway.jose.claims import ClaimPolicy
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import KeySet, parse_jwk
from gateway.jose.jws import parse_token
from gateway.jose.verifier import VerifyPolicy, check_typ, verify_compact, verify_token

NOW = 1_700_000_000.0
ISS = "https://idp.example/"
CLAIMS = ClaimPolicy(ISS, None)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", "APPLICATION/JWT", "at+jwt", "application/at+jwt"])
def test_check_typ_accepts(typ: str) -> None:
    check_typ({"typ": typ}, ("JWT", "at+jwt"))
    check_typ({}, ("JWT",))


@pytest.mark.parametrize("typ", ["JOSE", "text/jwt", "application/application/jwt", "jwt+json", "", "application/"])
def test_check_typ_rejects(typ: str) -> None:
    with pytest.raises(TokenError) as err:
        check_typ({"typ": typ}, ("JWT", "at+jwt"))
    assert err.value.reason == Reason.BAD_TYPE


def test_check_typ_allowed_list_normalized() -> None:
    check_typ({"typ": "at+jwt"}, ("application/AT+JWT",))
    check_typ({"typ": "secevent+jwt"}, ("secevent+jwt",))


@pytest.mark.parametrize("typ", [1, None, True, ["JWT"], {}])
def test_check_typ_not_string(typ: Any) -> None:
    with pytest.raises(TokenError) as err:
        check_typ({"typ": typ}, ("JWT",))
    assert err.value.reason == Reason.MALFORMED


@pytest.mark.parametrize("algs", [frozenset(), frozenset({"none"}), frozenset({"RS256", "ES256K"}), frozenset({"HS1"})])
def test_policy_refuses_unsupported_algs(algs: frozenset[str]) -> None:
    with pytest.raises(ValueError):
        VerifyPolicy(algs, CLAIMS)


def test_policy_typ_validated() -> None:
    with pytest.raises(ValueError):
        VerifyPolicy(frozenset({"ES256"}), CLAIMS, typ=("",))
    with pytest.raises(ValueError):
        VerifyPolicy(frozenset({"ES256"}), CLAIMS, typ=["JWT"])  # type: ignore[arg-type]


def test_order_alg_then_typ_then_key_then_signature_then_claims(keys: Keys) -> None:
    ks = KeySet([parse_jwk(public_jwk(keys.p256, kid="k"))])
    pol = VerifyPolicy(frozenset({"ES256"}), CLAIMS)
    stranger = ec.generate_private_key(ec.SECP256R1())

    def reason(header: dict[str, Any], claims: dict[str, Any], key: Any = keys.p256) -> Reason:
        with pytest.raises(TokenError) as err:
            verify_compact(make_token(header, claims, key), pol, ks, NOW)
        return err.value.reason

    bad_claims = {"iss": "other"}
    # Each check wins over every later one.
    assert reason({"alg": "ES384", "typ": "JOSE", "kid": "x"}, bad_claims, keys.p384) == Reason.ALG_NOT_ALLOWED
    assert reason({"alg": "ES256", "typ": "JOSE", "kid": "x"}, bad_claims) == Reason.BAD_TYPE
    assert reason({"alg": "ES256", "kid": "x"}, bad_claims) == Reason.UNKNOWN_KEY
    assert reason({"alg": "ES256", "kid": "k"}, bad_claims, stranger) == Reason.BAD_SIGNATURE
    assert reason({"alg": "ES256", "kid": "k"}, bad_claims) == Reason.BAD_ISSUER


def test_tries_each_candidate_and_returns_the_one_that_verified(keys: Keys) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    ks = KeySet([parse_jwk(public_jwk(other, kid="a")), parse_jwk(public_jwk(keys.p256, kid="b"))])
    pol = VerifyPolicy(frozenset({"ES256"}), CLAIMS)
    token = make_token({"alg": "ES256"}, {"iss": ISS, "exp": NOW + 60}, keys.p256)
    assert verify_token(parse_token(token), pol, ks, NOW).kid == "b"


def test_empty_keyset_is_unknown_key(keys: Keys) -> None:
    pol = VerifyPolicy(frozenset({"ES256"}), CLAIMS)
    token = make_token({"alg": "ES256"}, {"iss": ISS, "exp": NOW + 60}, keys.p256)
    with pytest.raises(TokenError) as err:
        verify_compact(token, pol, KeySet([]), NOW)
    assert err.value.reason == Reason.UNKNOWN_KEY
