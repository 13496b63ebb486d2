"""One named test per known JWS/JWT attack (in the spirit of PyJWT's test_advisory.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jose_testkit import Keys, b64u, make_token, public_jwk, resign, sign

from gateway.jose.algorithms import SUPPORTED, verify_signature
from gateway.jose.claims import ClaimPolicy
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import JwkError, KeySet, hmac_key, parse_jwk, parse_jwk_set
from gateway.jose.jws import parse_jws, parse_token
from gateway.jose.verifier import VerifyPolicy, verify_compact

NOW = 1_700_000_000.0
ISS = "https://idp.example/"
AUD = "orders-api"
ALL_ALGS = frozenset(SUPPORTED)
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "aud": AUD, "sub": "u1", "iat": NOW - 10, "exp": NOW + 300, **extra}


def policy(algs: frozenset[str] = ALL_ALGS, **claim_opts: Any) -> VerifyPolicy:
    return VerifyPolicy(algs, ClaimPolicy(ISS, frozenset({AUD}), **claim_opts))


@pytest.fixture(scope="module")
def keyset(keys: Keys) -> KeySet:
    return KeySet(
        [
            parse_jwk(public_jwk(keys.rsa, kid="rsa")),
            parse_jwk(public_jwk(keys.p256, kid="ec256")),
            parse_jwk(public_jwk(keys.p384, kid="ec384")),
            parse_jwk(public_jwk(keys.p521, kid="ec521")),
            parse_jwk(public_jwk(keys.ed25519, kid="ed25519")),
            parse_jwk(public_jwk(keys.ed448, kid="ed448")),
            hmac_key(keys.secret, kid="hs"),
        ]
    )


def reason_of(token: str, keyset: KeySet, pol: VerifyPolicy | None = None, **kw: Any) -> Reason:
    with pytest.raises(TokenError) as err:
        verify_compact(token, pol or policy(), keyset, NOW, **kw)
    return err.value.reason


def good(keys: Keys, alg: str = "ES256", kid: str | None = "ec256", **header: Any) -> str:
    hdr: dict[str, Any] = {"alg": alg, "typ": "JWT", **header}
    if kid is not None:
        hdr["kid"] = kid
    return make_token(hdr, claims(), keys.for_alg(alg))


def test_baseline_every_alg_verifies(keys: Keys, keyset: KeySet) -> None:
    kids = {"RS": "rsa", "PS": "rsa", "HS": "hs", "Ed": "ed25519"}
    for alg in sorted(SUPPORTED):
        kid = {"ES256": "ec256", "ES384": "ec384", "ES512": "ec521", "Ed448": "ed448"}.get(alg) or kids[alg[:2]]
        parsed, key = verify_compact(good(keys, alg, kid), policy(), keyset, NOW)
        assert key.kid == kid and parsed.claims["sub"] == "u1"
        # Without a kid, the key is found by alg alone.
        assert verify_compact(good(keys, alg, None), policy(), keyset, NOW)[1].fits(alg)


# --- alg none -----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_any_casing(alg: str, keyset: KeySet) -> None:
    h = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    p = b64u(json.dumps(claims()).encode())
    for token in (f"{h}.{p}.", f"{h}.{p}.c2ln"):
        assert reason_of(token, keyset) == Reason.ALG_NOT_ALLOWED
    with pytest.raises(ValueError):
        VerifyPolicy(frozenset({alg}), ClaimPolicy(ISS, None))


def test_alg_not_in_allow_list(keys: Keys, keyset: KeySet) -> None:
    assert reason_of(good(keys, "RS256", "rsa"), keyset, policy(frozenset({"ES256"}))) == Reason.ALG_NOT_ALLOWED
    bad = make_token({"alg": "HS1"}, claims(), keys.secret, alg="HS256")
    assert reason_of(bad, keyset) == Reason.ALG_NOT_ALLOWED


# --- key confusion ------------------------------------------------------------


def test_hs_rs_confusion_with_public_key_bytes(keys: Keys) -> None:
    pub = keys.rsa.public_key()
    jwk = public_jwk(pub, kid="rsa")
    rsa_only = KeySet([parse_jwk(jwk)])
    secrets = [
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(jwk).encode(),
        base64.urlsafe_b64decode(jwk["n"] + "=="),
    ]
    both = policy(frozenset({"HS256", "RS256"}))
    for secret in secrets:
        for kid in ("rsa", None):
            header: dict[str, Any] = {"alg": "HS256"} | ({"kid": kid} if kid else {})
            token = make_token(header, claims(), secret)
            expected = Reason.ALG_NOT_ALLOWED if kid else Reason.UNKNOWN_KEY
            assert reason_of(token, rsa_only, both) == expected
            parts = parse_jws(token)
            # Even called directly, an RSA key never verifies an HMAC.
            assert not verify_signature("HS256", rsa_only.keys[0], parts.signing_input, parts.signature)
    assert not any(rsa_only.keys[0].fits(a) for a in ("HS256", "HS384", "HS512"))


def test_oct_keys_in_jwk_set_are_skipped(keys: Keys) -> None:
    ks, skipped = parse_jwk_set({"keys": [public_jwk(keys.secret, kid="hs"), public_jwk(keys.rsa, kid="rsa")]})
    assert ks.kids == ("rsa",) and len(skipped) == 1 and "oct" in skipped[0]


# --- ECDSA --------------------------------------------------------------------


def test_ecdsa_r_s_zero(keys: Keys, keyset: KeySet) -> None:
    token = good(keys)
    forged = token.rsplit(".", 1)[0] + "." + b64u(bytes(64))
    assert reason_of(forged, keyset) == Reason.BAD_SIGNATURE
    for alg, kid, size in (("ES256", "ec256", 32), ("ES384", "ec384", 48), ("ES512", "ec521", 66)):
        (key,) = keyset.select(alg, kid)
        assert not verify_signature(alg, key, b"anything", bytes(2 * size))


def test_ecdsa_r_or_s_not_below_order(keys: Keys, keyset: KeySet) -> None:
    (key,) = keyset.select("ES256", "ec256")
    msg = b"a.b"
    r, s = decode_dss_signature(keys.p256.sign(msg, ec.ECDSA(hashes.SHA256())))

    def raw(r_: int, s_: int) -> bytes:
        return r_.to_bytes(32, "big") + s_.to_bytes(32, "big")

    assert verify_signature("ES256", key, msg, raw(r, s))
    # ECDSA's own malleability (n - s) is valid, which also pins our order constant.
    assert verify_signature("ES256", key, msg, raw(r, P256_N - s))
    for r_, s_ in ((r + P256_N, s), (r, s + P256_N), (P256_N, s), (r, P256_N), (P256_N, P256_N)):
        if r_ < 1 << 256 and s_ < 1 << 256:
            assert not verify_signature("ES256", key, msg, raw(r_, s_))


def test_ecdsa_der_signature_rejected(keys: Keys, keyset: KeySet) -> None:
    token = good(keys)
    signing_input = token.rsplit(".", 1)[0]
    der = keys.p256.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert reason_of(signing_input + "." + b64u(der), keyset) == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("alg", sorted(SUPPORTED))
def test_wrong_length_signatures(alg: str, keys: Keys, keyset: KeySet) -> None:
    token = good(keys, alg, None)
    parts = parse_jws(token)
    (key, *_) = keyset.select(alg, None)
    assert verify_signature(alg, key, parts.signing_input, parts.signature)
    sig = parts.signature
    for bad in (b"", sig[:-1], sig + b"\x00", b"\x00" + sig, sig[: len(sig) // 2], sig * 2):
        assert not verify_signature(alg, key, parts.signing_input, bad)


def test_verify_signature_is_total(keyset: KeySet) -> None:
    key = keyset.keys[0]
    for alg in ("", "none", "HS1", "RS256\x00", "ES256K", "EdDSA "):
        assert not verify_signature(alg, key, b"x", b"y")


# --- keys ----------------------------------------------------------------------


def test_rsa_1024_key_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwkError, match="2048"):
        parse_jwk(public_jwk(small))
    ks, skipped = parse_jwk_set({"keys": [public_jwk(small, kid="small")]})
    assert len(ks) == 0 and len(skipped) == 1


def test_private_key_in_jwk_refused(keys: Keys) -> None:
    priv = public_jwk(keys.p256) | {"d": b64u(b"\x01" * 32)}
    with pytest.raises(JwkError, match="private"):
        parse_jwk(priv)


def test_embedded_jwk_header_ignored(keys: Keys, keyset: KeySet) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    header = {"alg": "ES256", "jwk": public_jwk(attacker)}
    token = make_token(header, claims(), attacker)
    assert reason_of(token, keyset) == Reason.BAD_SIGNATURE
    assert reason_of(token, KeySet([])) == Reason.UNKNOWN_KEY


@pytest.mark.parametrize("param", ["jku", "x5u", "x5c"])
def test_key_url_and_cert_headers_ignored(param: str, keys: Keys, keyset: KeySet) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    value: Any = ["MIIB"] if param == "x5c" else "https://attacker.example/keys"
    forged = make_token({"alg": "ES256", param: value}, claims(), attacker)
    assert reason_of(forged, keyset) == Reason.BAD_SIGNATURE
    # The header is inert: a token signed by the real key still verifies with it present.
    legit = make_token({"alg": "ES256", "kid": "ec256", param: value}, claims(), keys.p256)
    assert verify_compact(legit, policy(), keyset, NOW)[1].kid == "ec256"


def test_kid_naming_key_unfit_for_alg_no_fallback(keys: Keys, keyset: KeySet) -> None:
    # Signed with the real P-256 key, but kid names the RSA key: no fallback to ec256.
    token = make_token({"alg": "ES256", "kid": "rsa"}, claims(), keys.p256)
    assert reason_of(token, keyset) == Reason.ALG_NOT_ALLOWED
    token = make_token({"alg": "ES256", "kid": "nobody"}, claims(), keys.p256)
    assert reason_of(token, keyset) == Reason.UNKNOWN_KEY


def test_curve_and_fully_specified_eddsa_mismatch(keys: Keys, keyset: KeySet) -> None:
    # ES384 signature by a P-384 key, kid pointing at the P-256 key.
    token = make_token({"alg": "ES384", "kid": "ec256"}, claims(), keys.p384)
    assert reason_of(token, keyset) == Reason.ALG_NOT_ALLOWED
    # RFC 9864: "Ed448" never fits an Ed25519 key, "Ed25519" never an Ed448 key.
    token = make_token({"alg": "Ed448", "kid": "ed25519"}, claims(), keys.ed448)
    assert reason_of(token, keyset) == Reason.ALG_NOT_ALLOWED
    token = make_token({"alg": "Ed25519", "kid": "ed448"}, claims(), keys.ed25519)
    assert reason_of(token, keyset) == Reason.ALG_NOT_ALLOWED


# --- header extensions -------------------------------------------------------------


def test_unknown_crit_rejected(keys: Keys, keyset: KeySet) -> None:
    token = good(keys, crit=["exp"], exp=1)
    assert reason_of(token, keyset) == Reason.UNSUPPORTED_CRIT


@pytest.mark.parametrize(
    "crit",
    [[], "exp", [1], ["exp", "exp"], ["absent"], ["alg"], ["kid"], {}, None],
    ids=["empty", "string", "non-string", "duplicate", "absent", "registered-alg", "registered-kid", "object", "null"],
)
def test_malformed_crit_rejected(crit: Any, keys: Keys, keyset: KeySet) -> None:
    assert reason_of(good(keys, crit=crit, exp=1), keyset) == Reason.MALFORMED


def test_b64_false_rejected(keys: Keys, keyset: KeySet) -> None:
    assert reason_of(good(keys, b64=False), keyset) == Reason.UNSUPPORTED_CRIT
    assert reason_of(good(keys, b64=False, crit=["b64"]), keyset) == Reason.UNSUPPORTED_CRIT
    assert reason_of(good(keys, b64="false"), keyset) == Reason.MALFORMED
    # b64: true is the default encoding (RFC 7797 §3) and is harmless.
    assert verify_compact(good(keys, b64=True), policy(), keyset, NOW)


# --- JSON ---------------------------------------------------------------------------


def test_duplicate_members_in_header(keys: Keys, keyset: KeySet) -> None:
    header = '{"alg":"ES256","kid":"ec256","kid":"rsa"}'
    assert reason_of(make_token(header, claims(), keys.p256, "ES256"), keyset) == Reason.MALFORMED
    header = '{"alg":"none","alg":"ES256"}'
    assert reason_of(make_token(header, claims(), keys.p256, "ES256"), keyset) == Reason.MALFORMED


def test_duplicate_members_in_payload(keys: Keys, keyset: KeySet) -> None:
    body = json.dumps(claims())[:-1] + ', "sub": "admin"}'
    token = make_token({"alg": "ES256", "kid": "ec256"}, body, keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED
    nested = json.dumps(claims())[:-1] + ', "realm": {"r": 1, "r": 2}}'
    token = make_token({"alg": "ES256", "kid": "ec256"}, nested, keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED


def test_deeply_nested_json(keys: Keys, keyset: KeySet) -> None:
    def with_depth(depth: int) -> str:
        # The claims object is depth 1; each "x" list adds one.
        return json.dumps(claims())[:-1] + ', "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    hdr = {"alg": "ES256", "kid": "ec256"}
    assert verify_compact(make_token(hdr, with_depth(16), keys.p256), policy(), keyset, NOW)
    assert reason_of(make_token(hdr, with_depth(17), keys.p256), keyset) == Reason.MALFORMED
    # Far past the recursion limit of the json module: still a clean MALFORMED.
    deep = make_token(hdr, with_depth(50_000), keys.p256)
    assert reason_of(deep, keyset, max_bytes=10**6) == Reason.MALFORMED


@pytest.mark.parametrize("doc", ["[]", "1", '"s"', "null", "true", "", " ", "{", '{"a":1} {}'])
def test_non_object_json(doc: str, keys: Keys, keyset: KeySet) -> None:
    token = make_token({"alg": "ES256", "kid": "ec256"}, doc, keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED
    h = b64u(doc.encode())
    with pytest.raises(TokenError) as err:
        parse_jws(f"{h}.e30.c2ln")
    assert err.value.reason == Reason.MALFORMED


@pytest.mark.parametrize(
    "raw",
    [b'{"sub":"\xff"}', b'\xef\xbb\xbf{"sub":"a"}', '{"sub":"a"}'.encode("utf-16"), b'{"sub":"\xc0\xaf"}'],
    ids=["invalid-byte", "utf8-bom", "utf16", "overlong"],
)
def test_non_utf8(raw: bytes, keys: Keys, keyset: KeySet) -> None:
    token = make_token({"alg": "ES256", "kid": "ec256"}, raw, keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(number: str, keys: Keys, keyset: KeySet) -> None:
    body = json.dumps(claims())[:-1] + f', "n": {number}}}'
    token = make_token({"alg": "ES256", "kid": "ec256"}, body, keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED


def test_kid_must_be_string(keys: Keys, keyset: KeySet) -> None:
    for kid in (1, None, ["ec256"], {"k": 1}):
        token = make_token({"alg": "ES256", "kid": kid}, claims(), keys.p256)
        assert reason_of(token, keyset) == Reason.MALFORMED


def test_alg_must_be_string(keys: Keys, keyset: KeySet) -> None:
    for alg in (None, 256, ["ES256"]):
        token = make_token({"alg": alg}, claims(), keys.p256, "ES256")
        assert reason_of(token, keyset) == Reason.MALFORMED
    token = make_token({"typ": "JWT"}, claims(), keys.p256, "ES256")
    assert reason_of(token, keyset) == Reason.MALFORMED


# --- encoding and structure ------------------------------------------------------------


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize("junk", ["=", "==", "+", "/", " ", "\n", "\t", "\r\n", "%3D", "\u00e9", "\x00"])
def test_padding_and_non_base64url_characters(segment: int, junk: str, keys: Keys, keyset: KeySet) -> None:
    parts = good(keys).split(".")
    parts[segment] += junk
    assert reason_of(".".join(parts), keyset) == Reason.MALFORMED
    parts = good(keys).split(".")
    parts[segment] = junk + parts[segment]
    assert reason_of(".".join(parts), keyset) == Reason.MALFORMED


def test_whitespace_around_token(keys: Keys, keyset: KeySet) -> None:
    token = good(keys)
    for bad in (" " + token, token + " ", token + "\n", "\t" + token):
        assert reason_of(bad, keyset) == Reason.MALFORMED


def test_standard_base64_alphabet_rejected(keys: Keys, keyset: KeySet) -> None:
    for _ in range(20):
        token = good(keys)
        sig = token.rsplit(".", 1)[1]
        if "-" in sig or "_" in sig:
            std = sig.replace("-", "+").replace("_", "/")
            assert reason_of(token.rsplit(".", 1)[0] + "." + std, keyset) == Reason.MALFORMED
            return
    pytest.fail("no signature with a '-' or '_' in 20 tries")


def test_non_canonical_base64url_rejected(keys: Keys, keyset: KeySet) -> None:
    token = good(keys)  # ES256: 64-octet signature, 86 chars, last quantum of 2
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = alphabet[last | 1]  # same decoded octets, non-zero padding bits
    assert base64.urlsafe_b64decode(sig[:-1] + twin + "==") == base64.urlsafe_b64decode(sig + "==")
    assert reason_of(f"{head}.{sig[:-1]}{twin}", keyset) == Reason.MALFORMED


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_wrong_segment_count(count: int, keys: Keys, keyset: KeySet) -> None:
    parts = good(keys).split(".")
    token = ".".join((parts * 2)[:count])
    assert reason_of(token, keyset) == Reason.MALFORMED


@pytest.mark.parametrize("empty", [0, 1, 2])
def test_empty_segments(empty: int, keys: Keys, keyset: KeySet) -> None:
    parts = good(keys).split(".")
    parts[empty] = ""
    assert reason_of(".".join(parts), keyset) == Reason.MALFORMED
    assert reason_of("..", keyset) == Reason.MALFORMED
    assert reason_of("", keyset) == Reason.MALFORMED


def test_oversize_token(keys: Keys, keyset: KeySet) -> None:
    token = good(keys)
    assert verify_compact(token, policy(), keyset, NOW, max_bytes=len(token))
    assert reason_of(token, keyset, max_bytes=len(token) - 1) == Reason.TOO_LARGE
    # The cap is checked before anything else: even garbage is TOO_LARGE.
    assert reason_of("!" * 9000, keyset) == Reason.TOO_LARGE
    big = make_token({"alg": "ES256", "kid": "ec256"}, claims(pad="x" * 9000), keys.p256)
    assert reason_of(big, keyset) == Reason.TOO_LARGE


def test_non_string_token() -> None:
    for bad in (b"a.b.c", None, 1):
        with pytest.raises(TokenError) as err:
            parse_token(bad)  # type: ignore[arg-type]
        assert err.value.reason == Reason.MALFORMED


# --- typ -----------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", "Application/JWT", "at+jwt", "application/AT+JWT"])
def test_typ_accepted(typ: str, keys: Keys, keyset: KeySet) -> None:
    assert verify_compact(good(keys, typ=typ), policy(), keyset, NOW)


@pytest.mark.parametrize("typ", ["JOSE", "text/jwt", "application/jose", "jwt ", "secevent+jwt", "application/"])
def test_typ_rejected(typ: str, keys: Keys, keyset: KeySet) -> None:
    assert reason_of(good(keys, typ=typ), keyset) == Reason.BAD_TYPE


def test_typ_wrong_type_and_absent(keys: Keys, keyset: KeySet) -> None:
    for typ in (1, None, ["JWT"], True):
        assert reason_of(good(keys, typ=typ), keyset) == Reason.MALFORMED
    token = make_token({"alg": "ES256", "kid": "ec256"}, claims(), keys.p256)
    assert verify_compact(token, policy(), keyset, NOW)


# --- claims --------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(int(NOW)), True, False, None, [1], {"t": 1}])
def test_time_claims_strings_and_booleans(claim: str, value: Any, keys: Keys, keyset: KeySet) -> None:
    token = make_token({"alg": "ES256", "kid": "ec256"}, claims(**{claim: value}), keys.p256)
    assert reason_of(token, keyset) == Reason.MALFORMED


def test_iat_in_the_future(keys: Keys, keyset: KeySet) -> None:
    hdr = {"alg": "ES256", "kid": "ec256"}
    assert verify_compact(make_token(hdr, claims(iat=NOW + 30), keys.p256), policy(), keyset, NOW)
    token = make_token(hdr, claims(iat=NOW + 31), keys.p256)
    assert reason_of(token, keyset) == Reason.NOT_YET_VALID


def test_expired_with_skew(keys: Keys, keyset: KeySet) -> None:
    hdr = {"alg": "ES256", "kid": "ec256"}
    assert verify_compact(make_token(hdr, claims(exp=NOW - 29), keys.p256), policy(), keyset, NOW)
    assert reason_of(make_token(hdr, claims(exp=NOW - 30), keys.p256), keyset) == Reason.EXPIRED
    strict = policy(clock_skew=0)
    assert reason_of(make_token(hdr, claims(exp=NOW), keys.p256), keyset, strict) == Reason.EXPIRED


def test_audience_string_and_array(keys: Keys, keyset: KeySet) -> None:
    hdr = {"alg": "ES256", "kid": "ec256"}
    for aud in (AUD, [AUD], ["other", AUD]):
        assert verify_compact(make_token(hdr, claims(aud=aud), keys.p256), policy(), keyset, NOW)
    for aud in ("other", ["other"], [], "ORDERS-API"):
        assert reason_of(make_token(hdr, claims(aud=aud), keys.p256), keyset) == Reason.BAD_AUDIENCE
    bad_aud: tuple[Any, ...] = (1, [AUD, 1], {"a": AUD}, None)
    for bad in bad_aud:
        assert reason_of(make_token(hdr, claims(aud=bad), keys.p256), keyset) == Reason.MALFORMED


def test_signature_checked_before_claims(keys: Keys, keyset: KeySet) -> None:
    # An expired token with a bad signature reports the signature: claims of an
    # unverified token are attacker-controlled and must not steer the outcome.
    token = make_token({"alg": "ES256", "kid": "ec256"}, claims(exp=1), ec.generate_private_key(ec.SECP256R1()))
    assert reason_of(token, keyset) == Reason.BAD_SIGNATURE


def test_signature_over_received_segments(keys: Keys, keyset: KeySet) -> None:
    # Re-serializing the header (here: whitespace) changes the signing input.
    token = good(keys)
    h, p, s = token.split(".")
    spaced = b64u(json.dumps(json.loads(base64.urlsafe_b64decode(h + "==")), indent=1).encode())
    assert reason_of(f"{spaced}.{p}.{s}", keyset) == Reason.BAD_SIGNATURE
    assert verify_compact(resign(f"{spaced}.{p}.{s}", keys.p256, "ES256"), policy(), keyset, NOW)


def test_hmac_short_secret_refused() -> None:
    with pytest.raises(JwkError):
        hmac_key(b"x" * 31)
    key = hmac_key(b"x" * 32)
    assert key.fits("HS256") and not key.fits("HS384") and not key.fits("HS512")
    msg = b"a.b"
    assert not verify_signature("HS512", key, msg, sign("HS512", b"x" * 32, msg))


def test_ed25519_key_never_fits_ecdsa_or_rsa(keys: Keys) -> None:
    key = parse_jwk(public_jwk(keys.ed25519))
    assert key.algs == frozenset({"EdDSA", "Ed25519"})
    assert isinstance(key.key, ed25519.Ed25519PublicKey)
