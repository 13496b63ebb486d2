"""Unit tests for gateway.jose.claims: one test per rule, time pinned."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.jose.claims import ClaimPolicy, check_claims
from gateway.jose.errors import Reason, TokenError

NOW = 1_700_000_000.0
ISS = "https://idp.example/"
POLICY = ClaimPolicy(ISS, frozenset({"api", "web"}))


def ok(**claims: Any) -> dict[str, Any]:
    return {"iss": ISS, "aud": "api", "exp": NOW + 60, **claims}


def reason(claims: dict[str, Any], policy: ClaimPolicy = POLICY, now: float = NOW) -> Reason:
    with pytest.raises(TokenError) as err:
        check_claims(claims, policy, now)
    # Descriptions never echo claim values.
    for value in claims.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in err.value.description
    return err.value.reason


def test_valid() -> None:
    check_claims(ok(), POLICY, NOW)
    check_claims(ok(nbf=NOW, iat=NOW), POLICY, NOW)


def test_issuer_exact() -> None:
    for iss in (ISS + "x", ISS.upper(), ISS.rstrip("/"), ""):
        assert reason(ok(iss=iss)) == Reason.BAD_ISSUER
    claims = ok()
    del claims["iss"]
    assert reason(claims) == Reason.BAD_ISSUER
    bad_iss: tuple[Any, ...] = (1, None, [ISS], True)
    for bad in bad_iss:
        assert reason(ok(iss=bad)) == Reason.MALFORMED


def test_audience() -> None:
    for aud in ("api", "web", ["api"], ["x", "web"]):
        check_claims(ok(aud=aud), POLICY, NOW)
    for aud in ("x", [], ["x"], "API"):
        assert reason(ok(aud=aud)) == Reason.BAD_AUDIENCE
    claims = ok()
    del claims["aud"]
    assert reason(claims) == Reason.BAD_AUDIENCE
    bad_aud: tuple[Any, ...] = (1, None, ["api", 2], {"api": 1}, True)
    for bad in bad_aud:
        assert reason(ok(aud=bad)) == Reason.MALFORMED


def test_audience_any() -> None:
    anyaud = ClaimPolicy(ISS, None)
    claims = ok()
    del claims["aud"]
    check_claims(claims, anyaud, NOW)
    check_claims(ok(aud=["x"]), anyaud, NOW)
    # Even with no audience configured, a malformed aud is malformed.
    assert reason(ok(aud=5), anyaud) == Reason.MALFORMED


def test_expiration_required() -> None:
    claims = ok()
    del claims["exp"]
    assert reason(claims) == Reason.MISSING_EXPIRATION
    check_claims(claims, ClaimPolicy(ISS, None, require_expiration=False), NOW)


def test_expired_boundary_with_skew() -> None:
    check_claims(ok(exp=NOW - 29.999), POLICY, NOW)
    assert reason(ok(exp=NOW - 30)) == Reason.EXPIRED
    no_skew = ClaimPolicy(ISS, None, clock_skew=0)
    check_claims(ok(exp=NOW + 0.001), no_skew, NOW)
    assert reason(ok(exp=NOW), no_skew) == Reason.EXPIRED


def test_not_before() -> None:
    check_claims(ok(nbf=NOW + 30), POLICY, NOW)
    assert reason(ok(nbf=NOW + 30.5)) == Reason.NOT_YET_VALID


def test_issued_in_future() -> None:
    check_claims(ok(iat=NOW + 30), POLICY, NOW)
    assert reason(ok(iat=NOW + 31)) == Reason.NOT_YET_VALID


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1700000000", True, False, None, [1], {}, float("nan"), float("inf")])
def test_numeric_dates_must_be_numbers(name: str, value: Any) -> None:
    assert reason(ok(**{name: value})) == Reason.MALFORMED


def test_numeric_dates_int_and_float() -> None:
    check_claims(ok(exp=int(NOW) + 60, nbf=int(NOW), iat=int(NOW)), POLICY, NOW)
    check_claims(ok(exp=NOW + 60.5, nbf=NOW - 0.5, iat=NOW - 0.25), POLICY, NOW)
    # Huge integers compare exactly, without float overflow.
    check_claims(ok(exp=10**400), POLICY, NOW)
    assert reason(ok(exp=-(10**400))) == Reason.EXPIRED


def test_malformed_time_claim_reported_before_issuer() -> None:
    assert reason({"iss": "other", "exp": "soon"}) == Reason.MALFORMED


def test_max_lifetime() -> None:
    policy = ClaimPolicy(ISS, None, max_lifetime=3600)
    check_claims(ok(iat=NOW, exp=NOW + 3600), policy, NOW)
    assert reason(ok(iat=NOW, exp=NOW + 3601), policy) == Reason.LIFETIME_TOO_LONG
    # Without iat, the remaining lifetime from now counts.
    check_claims(ok(exp=NOW + 3600), policy, NOW)
    assert reason(ok(exp=NOW + 3601), policy) == Reason.LIFETIME_TOO_LONG
    # A lifetime limit cannot hold for a token without exp, even if exp is optional.
    no_exp = ClaimPolicy(ISS, None, require_expiration=False, max_lifetime=3600)
    claims = ok()
    del claims["exp"]
    assert reason(claims, no_exp) == Reason.MISSING_EXPIRATION


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": ""},
        {"clock_skew": -1},
        {"clock_skew": float("nan")},
        {"max_lifetime": 0},
        {"max_lifetime": float("inf")},
        {"audiences": {"a"}},
    ],
)
def test_policy_validation(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"issuer": ISS, "audiences": None} | kwargs
    with pytest.raises(ValueError):
        ClaimPolicy(**args)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        POLICY.issuer = "x"  # type: ignore[misc]
