"""Unit tests for gateway.jose.jwk and the algorithm table: key loading, fitting and selection."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose_testkit import Keys, b64u, b64u_int, public_jwk

from gateway.jose import algorithms
from gateway.jose.algorithms import SUPPORTED, spec_for
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import Jwk, JwkError, KeySet, hmac_key, parse_jwk, parse_jwk_set


def test_supported_table() -> None:
    assert SUPPORTED == {
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448",
    }  # fmt: skip
    assert "none" not in SUPPORTED and spec_for("none") is None


@pytest.mark.parametrize(
    ("alg", "curve"), [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())]
)
def test_curve_orders_pinned(alg: str, curve: ec.EllipticCurve) -> None:
    spec = spec_for(alg)
    assert spec is not None
    ec.derive_private_key(spec.ec_order - 1, curve)  # n - 1 is a valid scalar
    with pytest.raises(ValueError):
        ec.derive_private_key(spec.ec_order, curve)  # n is not


def test_pss_salt_is_hash_length() -> None:
    for alg, size in (("PS256", 32), ("PS384", 48), ("PS512", 64)):
        spec = spec_for(alg)
        assert spec is not None and spec.digest_size == size


# --- parse_jwk -----------------------------------------------------------------------------


def test_rsa_key(keys: Keys) -> None:
    key = parse_jwk(public_jwk(keys.rsa, kid="r1"))
    assert key.kty == "RSA" and key.kid == "r1" and key.size == 2048
    assert key.algs == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert isinstance(key.key, rsa.RSAPublicKey)


@pytest.mark.parametrize("e", [1, 2, 4, 65536, 0])
def test_rsa_bad_exponent(keys: Keys, e: int) -> None:
    jwk = public_jwk(keys.rsa) | {"e": b64u_int(e)}
    with pytest.raises(JwkError, match="exponent"):
        parse_jwk(jwk)


def test_rsa_e3_accepted(keys: Keys) -> None:
    # Policy: e = 3 is weak only with broken padding checks, which cryptography does not have.
    jwk = public_jwk(keys.rsa) | {"e": "Aw"}
    assert parse_jwk(jwk).fits("RS256")


def test_rsa_leading_zero_modulus_tolerated(keys: Keys) -> None:
    n = keys.rsa.public_key().public_numbers().n
    jwk = public_jwk(keys.rsa) | {"n": b64u(b"\x00" + n.to_bytes(256, "big"))}
    assert parse_jwk(jwk).size == 2048


def test_rsa_2047_bits_refused(keys: Keys) -> None:
    n = keys.rsa.public_key().public_numbers().n >> 1 | 1
    with pytest.raises(JwkError, match="2048"):
        parse_jwk(public_jwk(keys.rsa) | {"n": b64u_int(n)})


@pytest.mark.parametrize("name", ["d", "p", "q", "dp", "dq", "qi", "oth"])
def test_private_members_refused(keys: Keys, name: str) -> None:
    with pytest.raises(JwkError, match="private"):
        parse_jwk(public_jwk(keys.rsa) | {name: "AQAB"})


def test_ec_keys(keys: Keys) -> None:
    for priv, crv, alg in ((keys.p256, "P-256", "ES256"), (keys.p384, "P-384", "ES384"), (keys.p521, "P-521", "ES512")):
        key = parse_jwk(public_jwk(priv))
        assert key.crv == crv and key.algs == {alg}


def test_ec_point_not_on_curve(keys: Keys) -> None:
    jwk = public_jwk(keys.p256)
    jwk["y"] = b64u(bytes(31) + b"\x01")
    with pytest.raises(JwkError, match="curve"):
        parse_jwk(jwk)


def test_ec_coordinate_length(keys: Keys) -> None:
    jwk = public_jwk(keys.p521)
    x = jwk["x"]
    from base64 import urlsafe_b64decode

    raw = urlsafe_b64decode(x + "==")
    with pytest.raises(JwkError, match="length"):
        parse_jwk(jwk | {"x": b64u(raw.lstrip(b"\x00")[-65:])})  # 65 octets for P-521
    with pytest.raises(JwkError, match="curve"):
        parse_jwk(jwk | {"crv": "P-256K"})
    with pytest.raises(JwkError, match="curve"):
        parse_jwk(jwk | {"crv": "secp256k1"})


def test_okp_keys(keys: Keys) -> None:
    ed = parse_jwk(public_jwk(keys.ed25519))
    assert ed.algs == {"EdDSA", "Ed25519"}
    e4 = parse_jwk(public_jwk(keys.ed448))
    assert e4.algs == {"EdDSA", "Ed448"}
    with pytest.raises(JwkError):
        parse_jwk({"kty": "OKP", "crv": "X25519", "x": b64u(bytes(32))})
    with pytest.raises(JwkError, match="length"):
        parse_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64u(bytes(31))})


def test_oct_only_when_allowed() -> None:
    jwk = {"kty": "oct", "k": b64u(bytes(48))}
    with pytest.raises(JwkError, match="oct"):
        parse_jwk(jwk)
    key = parse_jwk(jwk, allow_oct=True)
    assert key.algs == {"HS256", "HS384"}
    with pytest.raises(JwkError, match="32"):
        parse_jwk({"kty": "oct", "k": b64u(bytes(31))}, allow_oct=True)


def test_hmac_key_sizes() -> None:
    assert hmac_key(bytes(32)).algs == {"HS256"}
    assert hmac_key(bytes(48)).algs == {"HS256", "HS384"}
    assert hmac_key(bytes(64), kid="s").algs == {"HS256", "HS384", "HS512"}
    with pytest.raises(JwkError):
        hmac_key(bytes(31))
    # The secret never appears in a repr.
    assert "key=" not in repr(hmac_key(b"s" * 32))


@pytest.mark.parametrize(
    "jwk",
    [
        None, [], "x", {}, {"kty": 1}, {"kty": "RSA"}, {"kty": "RSA", "n": 5, "e": "AQAB"},
        {"kty": "RSA", "n": "AQAB=", "e": "AQAB"}, {"kty": "RSA", "n": "a+b/", "e": "AQAB"}, {"kty": "XYZ"},
        {"kty": "EC", "crv": "P-256", "x": "", "y": ""},
    ],
)  # fmt: skip
def test_malformed_jwks_refused(jwk: Any) -> None:
    with pytest.raises(JwkError):
        parse_jwk(jwk)


def test_member_types(keys: Keys) -> None:
    base = public_jwk(keys.p256)
    for bad in ({"kid": 1}, {"alg": ["ES256"]}, {"use": 1}, {"key_ops": "verify"}, {"key_ops": ["verify", "verify"]}):
        with pytest.raises(JwkError):
            parse_jwk(base | bad)


def test_alg_use_key_ops_honoured(keys: Keys) -> None:
    base = public_jwk(keys.rsa)
    assert parse_jwk(base | {"alg": "PS256"}).algs == {"PS256"}
    assert parse_jwk(base | {"alg": "RSA-OAEP"}).algs == frozenset()
    assert parse_jwk(base | {"use": "sig"}).fits("RS256")
    assert not parse_jwk(base | {"use": "enc"}).fits("RS256")
    assert parse_jwk(base | {"key_ops": ["verify"]}).fits("RS256")
    assert not parse_jwk(base | {"key_ops": ["encrypt", "sign"]}).fits("RS256")
    # EdDSA JWK alg restricts to exactly that name (no RFC 9864 aliasing).
    ed = parse_jwk(public_jwk(keys.ed25519) | {"alg": "EdDSA"})
    assert ed.fits("EdDSA") and not ed.fits("Ed25519")


# --- JWK Sets --------------------------------------------------------------------------------


def test_jwk_set_skips_bad_keys_with_safe_logs(keys: Keys) -> None:
    secret_looking = "SECRETSECRETSECRETSECRET"
    ks, logs = parse_jwk_set(
        {
            "keys": [
                public_jwk(keys.rsa, kid="good"),
                {"kty": "RSA", "kid": secret_looking, "n": "AQAB", "e": "AQAB"},
                public_jwk(keys.p256) | {"d": secret_looking},
                "not an object",
                {"kty": "oct", "k": b64u(bytes(64)), "kid": "hs"},
            ]
        }
    )
    assert ks.kids == ("good",) and len(ks) == 1
    assert len(logs) == 4
    assert all(secret_looking not in line for line in logs)
    assert logs[0].startswith("key #1 skipped")


def test_jwk_set_allow_oct(keys: Keys) -> None:
    ks, logs = parse_jwk_set({"keys": [{"kty": "oct", "k": b64u(bytes(64)), "kid": "hs"}]}, allow_oct=True)
    assert ks.kids == ("hs",) and not logs


@pytest.mark.parametrize("obj", [None, [], {"keys": {}}, {"keys": None}, {"key": []}, "keys"])
def test_jwk_set_shape(obj: Any) -> None:
    with pytest.raises(JwkError):
        parse_jwk_set(obj)


def test_jwk_set_empty_is_valid() -> None:
    ks, logs = parse_jwk_set({"keys": []})
    assert len(ks) == 0 and logs == ()


def test_jwk_set_key_count_capped(keys: Keys) -> None:
    jwk = public_jwk(keys.p256)
    ks, logs = parse_jwk_set({"keys": [jwk] * 300})
    assert len(ks) == 256 and len(logs) == 1


# --- KeySet.select ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ks(keys: Keys) -> KeySet:
    return KeySet(
        [
            parse_jwk(public_jwk(keys.rsa, kid="a")),
            parse_jwk(public_jwk(keys.p256, kid="b")),
            parse_jwk(public_jwk(keys.p256, kid="a", alg="ES256")),  # same kid, other type
            parse_jwk(public_jwk(keys.p384)),  # no kid
            parse_jwk(public_jwk(keys.rsa, kid="enc", use="enc")),
        ]
    )


def test_select_by_kid(ks: KeySet) -> None:
    assert [k.kty for k in ks.select("RS256", "a")] == ["RSA"]
    assert [k.kty for k in ks.select("ES256", "a")] == ["EC"]
    assert [k.kid for k in ks.select("ES256", "b")] == ["b"]


def test_select_kid_unfit_no_fallback(ks: KeySet) -> None:
    with pytest.raises(TokenError) as err:
        ks.select("RS256", "b")
    assert err.value.reason == Reason.ALG_NOT_ALLOWED
    with pytest.raises(TokenError) as err:
        ks.select("RS256", "enc")
    assert err.value.reason == Reason.ALG_NOT_ALLOWED


def test_select_unknown_kid(ks: KeySet) -> None:
    with pytest.raises(TokenError) as err:
        ks.select("ES384", "zzz")  # the kid-less P-384 key is not a fallback either
    assert err.value.reason == Reason.UNKNOWN_KEY


def test_select_without_kid(ks: KeySet) -> None:
    assert [k.kid for k in ks.select("ES256", None)] == ["b", "a"]
    assert [k.kid for k in ks.select("ES384", None)] == [None]
    assert [k.kid for k in ks.select("PS256", None)] == ["a"]
    with pytest.raises(TokenError) as err:
        ks.select("HS256", None)
    assert err.value.reason == Reason.UNKNOWN_KEY


def test_keyset_immutable_and_merged(ks: KeySet) -> None:
    with pytest.raises(AttributeError):
        ks._keys = ()
    assert ks.kids == ("a", "b", "enc")
    merged = ks.merged(KeySet([hmac_key(bytes(32), kid="h")]))
    assert len(merged) == len(ks) + 1 and merged.select("HS256", "h")[0].kty == "oct"
    assert len(ks) == 5


def test_jwk_is_frozen(keys: Keys) -> None:
    key = parse_jwk(public_jwk(keys.p256))
    with pytest.raises(AttributeError):
        key.kid = "x"  # type: ignore[misc]
    assert isinstance(key, Jwk)


def test_jose_imports_only_stdlib_and_cryptography() -> None:
    """Dependency direction: gateway.jose imports nothing of the gateway outside itself."""
    import sys

    package = Path(algorithms.__file__).parent
    allowed_third_party = {"cryptography"}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if name.startswith("gateway."):
                    assert name.startswith("gateway.jose"), f"{path.name} imports {name}"
                elif top != "gateway":
                    assert top in sys.stdlib_module_names or top in allowed_third_party, f"{path.name} imports {name}"
