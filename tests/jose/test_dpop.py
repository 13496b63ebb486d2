"""DPoP proofs (RFC 9449 §4.3): every check accepts a good proof and refuses its fault with its own reason.

Step 1 (one DPoP header) and step 10 (the server nonce), the replay check and the key
binding are request-path steps: tests/proxy/test_dpop.py runs them against a live gateway.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose_testkit import Keys, b64u, make_token, public_jwk, vectors_dir

from gateway.jose.dpop import (
    DpopError,
    DpopPolicy,
    DpopReason,
    ExternalUri,
    ProofKeys,
    access_token_hash,
    check_proof,
    confirmation_jkt,
    jwk_thumbprint,
    origin_of,
)
from gateway.jose.errors import Reason, TokenError
from gateway.sanitize import normalize_path

NOW = 1_700_000_000
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
URI = ExternalUri("https", "api.example.com", "/orders/42")
POLICY = DpopPolicy(frozenset({"ES256", "ES384", "EdDSA", "RS256", "PS256"}), max_age=60, clock_skew=30)


def _claims(**over: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": "n6Yk0vtr0kOQh8nZ", "htm": "GET", "htu": "https://api.example.com/orders/42",
        "iat": NOW, "ath": access_token_hash(TOKEN),
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _proof(keys: Keys, alg: str = "ES256", header: dict[str, Any] | None = None, **claims: Any) -> str:
    key = keys.for_alg(alg)
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key)}
    head.update(header or {})
    return make_token({k: v for k, v in head.items() if v is not None}, _claims(**claims), key, alg)


def _check(proof: str, *, method: str = "GET", uri: ExternalUri = URI, token: str | None = TOKEN,
           now: float = NOW, policy: DpopPolicy = POLICY, max_bytes: int = 8192, keys: ProofKeys | None = None) -> Any:
    return check_proof(proof, policy, method=method, uri=uri, access_token=token, now=now,
                       normalize_path=normalize_path, max_bytes=max_bytes, keys=keys)


def _refused(proof: str, reason: DpopReason, **kw: Any) -> None:
    with pytest.raises(DpopError) as err:
        _check(proof, **kw)
    assert err.value.reason is reason, err.value


# --- the accepting direction ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "RS256", "PS256"])
def test_valid_proof_is_accepted_with_its_key_thumbprint(keys: Keys, alg: str) -> None:
    proof = _check(_proof(keys, alg, nonce="server-nonce-1"))
    assert proof.jkt == jwk_thumbprint(public_jwk(keys.for_alg(alg)))
    assert (proof.jti, proof.iat, proof.nonce) == ("n6Yk0vtr0kOQh8nZ", NOW, "server-nonce-1")


# --- §4.3 step 2: a single well-formed JWT -----------------------------------------------------


@pytest.mark.parametrize("text", ["", "abc", "a.b", "a.b.c.d", "a.b.c", "eyJhbGciOiJFUzI1NiJ9..sig", " x.y.z"])
def test_step2_not_a_well_formed_jwt(text: str) -> None:
    _refused(text, DpopReason.MALFORMED)


def test_step2_duplicate_member_in_header(keys: Keys) -> None:
    jwk = json.dumps(public_jwk(keys.p256))
    header = '{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":' + jwk + "}"
    _refused(make_token(header, _claims(), keys.p256, "ES256"), DpopReason.MALFORMED)


def test_step2_over_the_size_cap(keys: Keys) -> None:
    proof = _proof(keys)
    _check(proof, max_bytes=len(proof))
    _refused(proof, DpopReason.TOO_LARGE, max_bytes=len(proof) - 1)


def test_step2_crit_extension_refused(keys: Keys) -> None:
    _refused(_proof(keys, header={"crit": ["exp-ext"], "exp-ext": 1}), DpopReason.UNSUPPORTED_CRIT)


# --- §4.3 step 3: required claims --------------------------------------------------------------


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat", "ath"])
def test_step3_required_claim_missing(keys: Keys, claim: str) -> None:
    _refused(_proof(keys, **{claim: None}), DpopReason.MISSING_CLAIM)


def test_step3_ath_not_required_without_an_access_token(keys: Keys) -> None:
    _check(_proof(keys, ath=None), token=None)


@pytest.mark.parametrize(
    "claim, value",
    [("jti", 7), ("jti", ""), ("jti", "x" * 257), ("htm", ["GET"]), ("htu", 5), ("iat", "1700000000"),
     ("iat", True), ("ath", 1), ("nonce", 3), ("nonce", "")],
)
def test_step3_claim_of_the_wrong_type(keys: Keys, claim: str, value: Any) -> None:
    _refused(_proof(keys, **{claim: value}), DpopReason.MALFORMED)


# --- §4.3 step 4: typ ------------------------------------------------------------------------


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "dpop", "dpop+jwt+x"])
def test_step4_typ_must_be_dpop_jwt(keys: Keys, typ: str | None) -> None:
    _refused(_proof(keys, header={"typ": typ}), DpopReason.BAD_TYPE)


@pytest.mark.parametrize("typ", ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt"])
def test_step4_typ_compares_as_a_media_type(keys: Keys, typ: str) -> None:
    _check(_proof(keys, header={"typ": typ}))


# --- §4.3 step 5: alg --------------------------------------------------------------------------


def test_step5_alg_none_refused(keys: Keys) -> None:
    proof = _proof(keys).rsplit(".", 2)
    header = b64u(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(keys.p256)}).encode())
    _refused(f"{header}.{proof[1]}.", DpopReason.ALG_NOT_ALLOWED)


def test_step5_symmetric_alg_refused(keys: Keys) -> None:
    token = make_token({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64u(keys.secret)}},
                       _claims(), keys.secret, "HS256")
    _refused(token, DpopReason.ALG_NOT_ALLOWED)


def test_step5_alg_outside_the_issuers_proof_algorithms(keys: Keys) -> None:
    proof = _proof(keys, "ES384")
    _check(proof)
    _refused(proof, DpopReason.ALG_NOT_ALLOWED, policy=DpopPolicy(frozenset({"ES256"}), 60, 30))


def test_policy_refuses_symmetric_algorithms() -> None:
    with pytest.raises(ValueError):
        DpopPolicy(frozenset({"HS256"}), 60, 30)


# --- §4.3 step 6: signature with the jwk header's key ------------------------------------------


def test_step6_signature_flipped(keys: Keys) -> None:
    head, body, sig = _proof(keys).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[5] ^= 1
    _refused(f"{head}.{body}.{b64u(bytes(raw))}", DpopReason.BAD_SIGNATURE)


def test_step6_signed_by_another_key_than_the_jwk(keys: Keys) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = make_token({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(keys.p256)}, _claims(), other, "ES256")
    _refused(token, DpopReason.BAD_SIGNATURE)


def test_step6_payload_changed_after_signing(keys: Keys) -> None:
    head, _, sig = _proof(keys).split(".")
    body = b64u(json.dumps(_claims(htm="POST")).encode())
    _refused(f"{head}.{body}.{sig}", DpopReason.BAD_SIGNATURE, method="POST")


# --- §4.3 step 7: a public key only; the key rules of every issuer key --------------------------


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi"])
def test_step7_private_member_in_jwk(keys: Keys, member: str) -> None:
    jwk = {**public_jwk(keys.p256), member: b64u(b"\x01" * 32)}
    _refused(_proof(keys, header={"jwk": jwk}), DpopReason.PRIVATE_KEY)


def test_step7_symmetric_key_is_private(keys: Keys) -> None:
    _refused(_proof(keys, header={"jwk": {"kty": "oct", "k": b64u(keys.secret)}}), DpopReason.PRIVATE_KEY)


def test_key_missing_or_not_an_object(keys: Keys) -> None:
    _refused(_proof(keys, header={"jwk": None}), DpopReason.BAD_KEY)
    _refused(_proof(keys, header={"jwk": "eyJ..."}), DpopReason.BAD_KEY)


def test_key_rsa_shorter_than_2048_bits_refused(keys: Keys) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    token = make_token({"typ": "dpop+jwt", "alg": "RS256", "jwk": public_jwk(small)}, _claims(), small, "RS256")
    _refused(token, DpopReason.BAD_KEY)


def test_key_curve_must_fit_the_alg(keys: Keys) -> None:
    # A P-256 key under ES384: the key does not fit the algorithm (no cross-curve use).
    token = make_token({"typ": "dpop+jwt", "alg": "ES384", "jwk": public_jwk(keys.p256)}, _claims(), keys.p384, "ES384")
    _refused(token, DpopReason.BAD_KEY)


def test_key_whose_own_alg_member_differs(keys: Keys) -> None:
    _refused(_proof(keys, header={"jwk": public_jwk(keys.p256, alg="ES384")}), DpopReason.BAD_KEY)


def test_key_not_on_the_curve(keys: Keys) -> None:
    jwk = {**public_jwk(keys.p256), "y": b64u(b"\x00" * 31 + b"\x05")}
    _refused(_proof(keys, header={"jwk": jwk}), DpopReason.BAD_KEY)


# --- §4.3 step 8: htm ----------------------------------------------------------------------------


def test_step8_htm_must_equal_the_method_case_sensitively(keys: Keys) -> None:
    _check(_proof(keys, htm="POST"), method="POST")
    _refused(_proof(keys, htm="POST"), DpopReason.BAD_HTM, method="GET")
    _refused(_proof(keys, htm="get"), DpopReason.BAD_HTM, method="GET")


# --- §4.3 step 9: htu ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/orders/42",
        "HTTPS://API.Example.COM/orders/42",  # scheme and host case-insensitive
        "https://api.example.com:443/orders/42",  # default port dropped
        "https://api.example.com/orders/42?page=2",  # query ignored
        "https://api.example.com/orders/42#frag",  # fragment ignored
        "https://api.example.com/orders/./x/../42",  # dot segments (the SPEC normalization)
        "https://api.example.com//orders/%34%32",  # merged slashes, decoded unreserved characters
    ],
)
def test_step9_htu_matches_after_normalization(keys: Keys, htu: str) -> None:
    _check(_proof(keys, htu=htu))


@pytest.mark.parametrize(
    "htu",
    [
        "https://other.example.com/orders/42",
        "http://api.example.com/orders/42",
        "https://api.example.com:8443/orders/42",
        "https://api.example.com/orders/43",
        "https://api.example.com/Orders/42",  # the path is case-sensitive
        "https://user@api.example.com/orders/42",  # userinfo is not part of an origin we compare
        "/orders/42",
        "https://api.example.com/orders%2F42",  # a path the normalization refuses never matches
        "ftp://api.example.com/orders/42",
    ],
)
def test_step9_htu_mismatch(keys: Keys, htu: str) -> None:
    _refused(_proof(keys, htu=htu), DpopReason.BAD_HTU)


def test_origin_drops_default_ports_only() -> None:
    assert origin_of("HTTP", "Example.COM:80") == ("http", "example.com")
    assert origin_of("https", "example.com:443") == ("https", "example.com")
    assert origin_of("http", "example.com:443") == ("http", "example.com:443")
    assert origin_of("http", "[::1]:8080") == ("http", "[::1]:8080")
    assert origin_of("http", "x:y") is None and origin_of("http", "[::1") is None


# --- §4.3 step 11: iat window ------------------------------------------------------------------


def test_step11_iat_at_the_edges_of_the_window(keys: Keys) -> None:
    _check(_proof(keys, iat=NOW - 60 - 30))  # max_age + skew into the past
    _check(_proof(keys, iat=NOW + 30))  # skew into the future


def test_step11_iat_too_old(keys: Keys) -> None:
    _refused(_proof(keys, iat=NOW - 91), DpopReason.STALE)


def test_step11_iat_in_the_future(keys: Keys) -> None:
    _refused(_proof(keys, iat=NOW + 31), DpopReason.FUTURE)


# --- §4.3 step 12: ath (the key binding is the request path's, with cnf.jkt) ---------------------


def test_step12_ath_must_hash_this_access_token(keys: Keys) -> None:
    _refused(_proof(keys, ath=access_token_hash(TOKEN + "x")), DpopReason.BAD_ATH)
    _refused(_proof(keys), DpopReason.BAD_ATH, token="another.access.token")


def test_confirmation_jkt() -> None:
    assert confirmation_jkt({}) is None
    assert confirmation_jkt({"cnf": {"x5t#S256": "abc"}}) is None
    assert confirmation_jkt({"cnf": {"jkt": "abc"}}) == "abc"
    for bad in ({"cnf": "abc"}, {"cnf": {"jkt": 5}}, {"cnf": {"jkt": ""}}):
        with pytest.raises(TokenError) as err:
            confirmation_jkt(bad)
        assert err.value.reason is Reason.MALFORMED


# --- published vectors ---------------------------------------------------------------------------

RFC9449 = vectors_dir() / "rfc9449"


def _vector_files() -> list[Path]:
    return sorted(RFC9449.glob("rfc9449_*.json"))


def test_rfc9449_vectors_present() -> None:
    assert [p.name for p in _vector_files()] == [
        "rfc9449_fig13_resource_request.json", "rfc9449_fig5_token_request.json", "rfc9449_fig7_refresh_request.json",
    ]


@pytest.mark.parametrize("path", _vector_files(), ids=lambda p: p.stem)
def test_rfc9449_example_proof_verifies_with_its_key(path: Path) -> None:
    vec = json.loads(path.read_text())
    scheme, _, rest = vec["htu"].partition("://")
    host, _, tail = rest.partition("/")
    uri = ExternalUri(scheme, host, "/" + tail)
    policy = DpopPolicy(frozenset({"ES256"}), max_age=60, clock_skew=0)
    proof = check_proof(vec["proof"], policy, method=vec["method"], uri=uri, access_token=vec["access_token"],
                        now=vec["iat"], normalize_path=normalize_path)
    assert proof.jkt == vec["jwk_thumbprint"]  # RFC 9449 §6.1 Figure 9's cnf.jkt
    assert proof.iat == vec["iat"]
    # The same proof an hour later is stale, and with another method it is refused.
    with pytest.raises(DpopError) as err:
        check_proof(vec["proof"], policy, method=vec["method"], uri=uri, access_token=vec["access_token"],
                    now=vec["iat"] + 3600, normalize_path=normalize_path)
    assert err.value.reason is DpopReason.STALE
    with pytest.raises(DpopError) as err:
        check_proof(vec["proof"], policy, method="PUT", uri=uri, access_token=vec["access_token"],
                    now=vec["iat"], normalize_path=normalize_path)
    assert err.value.reason is DpopReason.BAD_HTM


def test_rfc9449_ath_example() -> None:
    vec = json.loads((RFC9449 / "rfc9449_fig13_resource_request.json").read_text())
    payload = json.loads(base64.urlsafe_b64decode(vec["proof"].split(".")[1] + "=="))
    assert access_token_hash(vec["access_token"]) == payload["ath"] == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_rfc7638_thumbprint_example() -> None:
    vec = json.loads((RFC9449 / "rfc7638_3_1_thumbprint.json").read_text())
    assert jwk_thumbprint(vec["jwk"]) == vec["thumbprint"]
    # Optional members do not change it; a changed required member does.
    assert jwk_thumbprint({k: v for k, v in vec["jwk"].items() if k in ("kty", "n", "e")}) == vec["thumbprint"]
    assert jwk_thumbprint({**vec["jwk"], "e": "AQAC"}) != vec["thumbprint"]


def test_thumbprint_is_sha256_of_the_canonical_members(keys: Keys) -> None:
    jwk = public_jwk(keys.ed25519, kid="k1")
    canonical = json.dumps({"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}, separators=(",", ":"))
    assert jwk_thumbprint(jwk) == b64u(hashlib.sha256(canonical.encode()).digest())


def test_cached_proof_keys_give_the_same_verdicts(keys: Keys) -> None:
    cache = ProofKeys(max_entries=2)
    for _ in range(2):  # the second round comes from the cache
        assert _check(_proof(keys), keys=cache).jkt == jwk_thumbprint(public_jwk(keys.p256))
        with pytest.raises(DpopError) as err:
            _check(_proof(keys, header={"jwk": public_jwk(keys.p256, alg="ES384")}), keys=cache)
        assert err.value.reason is DpopReason.BAD_KEY
    # A key_ops list is not hashable: decoded every time, same rules.
    assert _check(_proof(keys, header={"jwk": public_jwk(keys.p256, key_ops=["verify"])}), keys=cache)
    _check(_proof(keys, "EdDSA"), keys=cache)  # a third key pushes the oldest out
    assert _check(_proof(keys), keys=cache).jkt == jwk_thumbprint(public_jwk(keys.p256))


def test_rfc9449_vector_files_match_their_checksums() -> None:
    sums = dict(
        (path, digest) for digest, _, path in
        (line.partition("  ") for line in (vectors_dir() / "SHA256SUMS").read_text().splitlines())
    )
    for path in sorted(RFC9449.glob("*.json")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[f"rfc9449/{path.name}"], path.name
