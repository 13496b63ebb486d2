"""One named test per known JWE attack, through the gateway's JWE layer (parse -> decrypt -> nested JWS)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from jose_testkit import Keys, b64u, b64u_int, make_token, wycheproof
from jwe_testkit import compact, content_encrypt, encrypt, private_jwk, public_epk

from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe import JwePolicy, decrypt_jwe, ephemeral_public_key, parse_jwe, unwrap_nested_jws
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, CryptoFailure
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk, parse_decryption_jwk_set
from gateway.jose.jwk import JwkError

ALL = JwePolicy(frozenset(KEY_MANAGEMENT), frozenset(CONTENT_ENCRYPTION))
JWT = {"cty": "JWT"}
P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def inner(keys: Keys) -> str:
    """A compact JWS: what a nested JWT carries."""
    return make_token({"alg": "ES256", "typ": "JWT"}, {"iss": "https://idp.example/", "sub": "u1"}, keys.p256)


def keyset(*jwks: dict[str, Any]) -> DecryptionKeySet:
    return DecryptionKeySet([parse_decryption_jwk(j) for j in jwks])


def refused(token: str, keys: DecryptionKeySet, policy: JwePolicy = ALL) -> TokenError:
    with pytest.raises(TokenError) as exc:
        decrypt_jwe(parse_jwe(token), keys, policy)
    return exc.value


def assert_decrypt_failed(err: TokenError) -> None:
    # One reason, one sentence: nothing tells which step failed.
    assert err.reason is Reason.DECRYPT_FAILED
    assert err.description == DECRYPT_FAILED_DESCRIPTION


def test_invalid_curve_epk_is_refused_before_any_agreement(p256: ec.EllipticCurvePrivateKey) -> None:
    keys = keyset(private_jwk(p256))
    good = encrypt({"alg": "ECDH-ES", "enc": "A256GCM"}, b"x", p256)
    header = json.loads(_header(good))
    # A point of a weak twin curve: valid coordinates, y off by one, so not on P-256.
    y = (int.from_bytes(_b64d(header["epk"]["y"]), "big") + 1) % P256_P
    header["epk"]["y"] = b64u_int(y, 32)
    assert_decrypt_failed(refused(_with_header(good, header), keys))
    with pytest.raises(CryptoFailure):
        ephemeral_public_key(header["epk"], keys.keys[0])
    # And the classic: the point (0, 0), and a point at "infinity" spelled as zeros.
    header["epk"]["x"] = header["epk"]["y"] = b64u(bytes(32))
    with pytest.raises(CryptoFailure):
        ephemeral_public_key(header["epk"], keys.keys[0])


def test_epk_on_another_curve_is_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    keys = keyset(private_jwk(p256))
    other = ec.generate_private_key(ec.SECP384R1())
    token = encrypt({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "epk": public_epk(other)}, b"x", other)
    assert_decrypt_failed(refused(token, keys))
    # An X25519 epk to an EC key, and an EC epk to an X25519 key.
    xkey = x25519.X25519PrivateKey.generate()
    token = encrypt({"alg": "ECDH-ES", "enc": "A128GCM"}, b"x", xkey)
    assert_decrypt_failed(refused(token, keys))
    assert_decrypt_failed(refused(encrypt({"alg": "ECDH-ES", "enc": "A128GCM"}, b"x", p256), keyset(private_jwk(xkey))))


def test_missing_or_malformed_epk_is_decrypt_failed(p256: ec.EllipticCurvePrivateKey) -> None:
    keys = keyset(private_jwk(p256))
    good = encrypt({"alg": "ECDH-ES", "enc": "A128GCM"}, b"x", p256)
    header = json.loads(_header(good))
    for epk in (None, "str", {}, {**header["epk"], "x": "!!"}, {**header["epk"], "d": header["epk"]["x"]}):
        changed = dict(header)
        if epk is None:
            del changed["epk"]
        else:
            changed["epk"] = epk
        assert_decrypt_failed(refused(_with_header(good, changed), keys))


def test_rsa1_5_oracle_shapes_are_refused_from_the_header(rsa_key: rsa.RSAPrivateKey) -> None:
    """Bleichenbacher needs the server to tell padding faults apart; RSA1_5 is refused before
    the private key is used, so every shape gets the same answer."""
    keys = keyset(private_jwk(rsa_key))  # an RSA key with no alg: fits RSA-OAEP and RSA-OAEP-256 only
    k = rsa_key.key_size // 8
    shapes = [b"", bytes(k), b"\x00\x02" + os.urandom(k - 2), b"\x00\x01" + b"\xff" * (k - 2), os.urandom(k)]
    errors = []
    for ek in shapes:
        token = compact({"alg": "RSA1_5", "enc": "A128GCM"}, ek, os.urandom(12), b"c", os.urandom(16))
        errors.append(refused(token, keys))
    assert {(e.reason, e.description) for e in errors} == {
        (Reason.ALG_NOT_ALLOWED, "The token's encryption algorithms are not allowed.")
    }
    with pytest.raises(JwkError, match="RSA1_5"):
        parse_decryption_jwk(private_jwk(rsa_key, alg="RSA1_5"))


def test_rsa_oaep_faults_all_look_the_same(rsa_key: rsa.RSAPrivateKey) -> None:
    """Manger's attack needs OAEP faults told apart from tag faults: they are not (random CEK)."""
    keys = keyset(private_jwk(rsa_key))
    good = encrypt({"alg": "RSA-OAEP-256", "enc": "A256GCM"}, b"x", rsa_key)
    h, ek, iv, ct, tag = good.split(".")
    k = rsa_key.key_size // 8
    bad_eks = [b"", bytes(k), os.urandom(k), bytes(k - 1), b"\xff" * k]
    errors = [refused(".".join([h, b64u(e), iv, ct, tag]), keys) for e in bad_eks]
    errors.append(refused(".".join([h, ek, iv, ct, _flip(tag)]), keys))
    for err in errors:
        assert_decrypt_failed(err)


def test_truncated_tag_is_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    secret = os.urandom(32)
    for enc in ("A256GCM", "A128CBC-HS256"):
        token = encrypt({"alg": "A256KW", "enc": enc}, b"hello", secret)
        parts = token.split(".")
        tag = _b64d(parts[4])
        for cut in (1, 4, 8, len(tag) - 1):
            parts[4] = b64u(tag[:-cut])
            assert_decrypt_failed(refused(".".join(parts), keyset(private_jwk(secret))))


def test_zero_length_iv_or_tag_is_refused() -> None:
    secret = os.urandom(16)
    keys = keyset(private_jwk(secret, alg="dir"))
    token = encrypt({"alg": "dir", "enc": "A128GCM"}, b"hello", secret)
    h, ek, iv, ct, tag = token.split(".")
    assert_decrypt_failed(refused(".".join([h, ek, "", ct, tag]), keys))
    assert_decrypt_failed(refused(".".join([h, ek, iv, ct, ""]), keys))
    # A zero-length IV with a tag made for it (GCM itself refuses a 0-bit IV; we refuse before).
    header = b64u(b'{"alg":"dir","enc":"A128GCM"}')
    assert_decrypt_failed(refused(".".join([header, "", "", ct, tag]), keys))


def test_dir_with_a_wrong_length_key_is_refused() -> None:
    key32 = os.urandom(32)  # a dir key for A256GCM / A128CBC-HS256, not for A128GCM
    keys = keyset(private_jwk(key32, alg="dir"))
    header = {"alg": "dir", "enc": "A128GCM"}
    # Made by a sender that (wrongly) used the first 16 bytes as the A128GCM key.
    iv = os.urandom(12)
    ct, tag = content_encrypt("A128GCM", key32[:16], iv, b"x", b64u(json.dumps(header).encode()).encode())
    assert_decrypt_failed(refused(compact(header, b"", iv, ct, tag), keys))
    # And a key whose length fits no alg at all does not load.
    with pytest.raises(JwkError, match="no JWE algorithm"):
        parse_decryption_jwk(private_jwk(os.urandom(20)))
    with pytest.raises(JwkError, match="does not fit"):
        parse_decryption_jwk(private_jwk(os.urandom(16), alg="A256KW"))


def test_dir_and_ecdh_es_with_an_encrypted_key_are_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    secret = os.urandom(16)
    token = encrypt({"alg": "dir", "enc": "A128GCM"}, b"x", secret)
    h, _, iv, ct, tag = token.split(".")
    assert_decrypt_failed(refused(".".join([h, b64u(b"extra"), iv, ct, tag]), keyset(private_jwk(secret))))
    token = encrypt({"alg": "ECDH-ES", "enc": "A128GCM"}, b"x", p256)
    h, _, iv, ct, tag = token.split(".")
    assert_decrypt_failed(refused(".".join([h, b64u(bytes(24)), iv, ct, tag]), keyset(private_jwk(p256))))


def test_key_wrap_of_a_cek_of_the_wrong_size_for_enc_is_refused() -> None:
    kek = os.urandom(16)
    # A 16-byte CEK wrapped for A256GCM, and a 64-byte one for A128CBC-HS256.
    for enc, cek in (("A256GCM", os.urandom(16)), ("A128CBC-HS256", os.urandom(64))):
        assert_decrypt_failed(refused(_wrap_wrong(kek, enc, cek), keyset(private_jwk(kek))))


def test_zip_is_never_accepted() -> None:
    secret = os.urandom(16)
    token = encrypt({"alg": "A128KW", "enc": "A128GCM", "zip": "DEF"}, b"x", secret)
    err = refused(token, keyset(private_jwk(secret)))
    assert err.reason is Reason.ALG_NOT_ALLOWED and "zip" in err.description


def test_nested_jwe_in_jwe_is_refused(inner: str) -> None:
    secret = os.urandom(16)
    keys = keyset(private_jwk(secret))
    middle = encrypt({"alg": "A128KW", "enc": "A128GCM", **JWT}, inner.encode(), secret)
    outer = encrypt({"alg": "A128KW", "enc": "A128GCM", **JWT}, middle.encode(), secret)
    assert unwrap_nested_jws(middle, keys, ALL).jws == inner  # depth one is fine
    with pytest.raises(TokenError) as exc:
        unwrap_nested_jws(outer, keys, ALL)
    assert exc.value.reason is Reason.MALFORMED


def test_bare_claims_plaintext_is_refused() -> None:
    secret = os.urandom(16)
    claims = json.dumps({"iss": "https://idp.example/", "sub": "admin"}).encode()
    token = encrypt({"alg": "A128KW", "enc": "A128GCM", **JWT}, claims, secret)
    with pytest.raises(TokenError) as exc:
        unwrap_nested_jws(token, keyset(private_jwk(secret)), ALL)
    assert exc.value.reason is Reason.MALFORMED


def test_cty_must_say_jwt(inner: str) -> None:
    secret = os.urandom(16)
    keys = keyset(private_jwk(secret))
    for cty in ("JWT", "jwt", "application/jwt", "APPLICATION/JWT"):
        token = encrypt({"alg": "A128KW", "enc": "A128GCM", "cty": cty}, inner.encode(), secret)
        assert unwrap_nested_jws(token, keys, ALL).jws == inner
    for header in ({}, {"cty": "json"}, {"cty": 1}, {"cty": "application/jwt+x"}):
        token = encrypt({"alg": "A128KW", "enc": "A128GCM", **header}, inner.encode(), secret)
        with pytest.raises(TokenError) as exc:
            unwrap_nested_jws(token, keys, ALL)
        assert exc.value.reason is Reason.BAD_TYPE


@pytest.mark.parametrize("count", [2, 3, 4, 6, 7])
def test_wrong_segment_count_is_malformed(count: int) -> None:
    token = ".".join(["eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0"] + ["AAAA"] * (count - 1))
    with pytest.raises(TokenError) as exc:
        parse_jwe(token)
    assert exc.value.reason is Reason.MALFORMED


def test_oversize_is_refused_before_decoding() -> None:
    token = "e" * 5000 + "....AAAA"
    with pytest.raises(TokenError) as exc:
        parse_jwe(token, max_bytes=4096)
    assert exc.value.reason is Reason.TOO_LARGE


def test_header_strictness_is_the_jws_one() -> None:
    cases = {
        b'{"alg":"dir","enc":"A128GCM","enc":"A256GCM"}': Reason.MALFORMED,  # duplicate member
        b'{"alg":"dir"}': Reason.MALFORMED,  # no enc
        b'{"alg":"dir","enc":"A128GCM","crit":["x"],"x":1}': Reason.UNSUPPORTED_CRIT,
        b'{"alg":"dir","enc":"A128GCM","kid":7}': Reason.MALFORMED,
        b"[1]": Reason.MALFORMED,
    }
    for raw, reason in cases.items():
        with pytest.raises(TokenError) as exc:
            parse_jwe(compact(raw, b"", bytes(12), b"c", bytes(16)))
        assert exc.value.reason is reason, raw
    # Padding and non-canonical base64url in any segment: malformed.
    good = compact({"alg": "dir", "enc": "A128GCM"}, b"", bytes(12), b"cc", bytes(16))
    for bad in (good + "=", good.replace(".", ". ", 1), good[:-1] + "R"):
        with pytest.raises(TokenError) as exc:
            parse_jwe(bad)
        assert exc.value.reason is Reason.MALFORMED


def test_never_algorithms_cannot_be_allowed() -> None:
    for alg in ("RSA1_5", "PBES2-HS256+A128KW", "none"):
        with pytest.raises(ValueError, match="unsupported"):
            JwePolicy(frozenset({alg}), frozenset({"A128GCM"}))
    token = compact({"alg": "PBES2-HS256+A128KW", "enc": "A128GCM", "p2s": "AAAA", "p2c": 10**9}, b"k" * 24, bytes(12), b"c", bytes(16))
    assert refused(token, DecryptionKeySet([])).reason is Reason.ALG_NOT_ALLOWED


def test_alg_and_enc_outside_the_allow_lists_are_refused_first() -> None:
    secret = os.urandom(32)
    keys = keyset(private_jwk(secret))
    narrow = JwePolicy(frozenset({"A256KW"}), frozenset({"A256GCM"}))
    assert decrypt_jwe(parse_jwe(encrypt({"alg": "A256KW", "enc": "A256GCM"}, b"ok", secret)), keys, narrow) == b"ok"
    for header in ({"alg": "A256GCMKW", "enc": "A256GCM"}, {"alg": "A256KW", "enc": "A128CBC-HS256"}):
        assert refused(encrypt(header, b"x", secret), keys, narrow).reason is Reason.ALG_NOT_ALLOWED


def test_kid_names_one_key_and_never_falls_back() -> None:
    a, b = os.urandom(16), os.urandom(16)
    keys = keyset(private_jwk(a, kid="a"), private_jwk(b, kid="b", alg="A128GCMKW"))
    token = encrypt({"alg": "A128KW", "enc": "A128GCM", "kid": "a"}, b"ok", a)
    assert decrypt_jwe(parse_jwe(token), keys, ALL) == b"ok"
    # kid "b" names a key unfit for A128KW: refused, not retried with "a".
    assert_decrypt_failed(refused(encrypt({"alg": "A128KW", "enc": "A128GCM", "kid": "b"}, b"x", a), keys))
    assert_decrypt_failed(refused(encrypt({"alg": "A128KW", "enc": "A128GCM", "kid": "zz"}, b"x", a), keys))
    # Without kid, every key fitting the alg is tried.
    assert decrypt_jwe(parse_jwe(encrypt({"alg": "A128KW", "enc": "A128GCM"}, b"ok", a)), keys, ALL) == b"ok"


def test_cbc_tag_is_checked_before_padding() -> None:
    """A padding oracle needs unpadding to run on unauthenticated ciphertext: it never does.
    With the tag recomputed over a ciphertext whose padding is broken (possible only with the
    key), the failure is still the same single reason."""
    secret = os.urandom(32)
    keys = keyset(private_jwk(secret, alg="dir"))
    header = {"alg": "dir", "enc": "A128CBC-HS256"}
    token = encrypt(header, b"0123456789abcdef", secret)
    h, ek, iv, ct, tag = token.split(".")
    # Flip a bit in the last ciphertext block's predecessor: the padding would break, but the tag fails first.
    raw = bytearray(_b64d(ct))
    raw[-17] ^= 1
    assert_decrypt_failed(refused(".".join([h, ek, iv, b64u(bytes(raw)), tag]), keys))


def test_decryption_keys_refuse_public_small_and_misfit_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JwkError, match="public key"):
        parse_decryption_jwk({k: v for k, v in private_jwk(rsa_key).items() if k in ("kty", "n", "e")})
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwkError, match="2048"):
        parse_decryption_jwk(private_jwk(small))
    with pytest.raises(JwkError, match="does not fit"):
        parse_decryption_jwk(private_jwk(rsa_key, alg="ECDH-ES"))
    with pytest.raises(JwkError, match="does not match"):
        other = ec.generate_private_key(ec.SECP256R1())
        parse_decryption_jwk({**private_jwk(ec.generate_private_key(ec.SECP256R1())), "d": private_jwk(other)["d"]})
    with pytest.raises(JwkError, match="share a kid"):
        parse_decryption_jwk_set({"keys": [private_jwk(os.urandom(16), kid="k"), private_jwk(os.urandom(16), kid="k")]})


def _header(token: str) -> str:
    return _b64d(token.split(".", 1)[0]).decode()


def _with_header(token: str, header: dict[str, Any]) -> str:
    rest = token.split(".", 1)[1]
    return b64u(json.dumps(header).encode()) + "." + rest


def _b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _flip(segment: str) -> str:
    return ("B" if segment[0] == "A" else "A") + segment[1:]


def _wrap_wrong(kek: bytes, enc: str, cek: bytes) -> str:
    header = {"alg": "A128KW", "enc": enc}
    spec = CONTENT_ENCRYPTION[enc]
    iv = os.urandom(12 if spec.cbc_hash is None else 16)
    aad = b64u(json.dumps(header).encode()).encode()
    # Encrypt with whatever CEK bytes fit the primitive, so only the CEK size is wrong.
    usable = (cek * 4)[: spec.cek_bytes]
    ct, tag = content_encrypt(enc, usable, iv, b"x", aad)
    return compact(header, aes_key_wrap(kek, cek), iv, ct, tag)


def test_a_roca_key_is_refused_as_a_decryption_key() -> None:
    """CVE-2017-15361: anyone can factor such a modulus and read every token encrypted to it."""
    roca = next(g for g in wycheproof("json_web_crypto_test.json")["testGroups"] if g["comment"] == "jws_rsa_roca_key")
    private = {k: v for k, v in roca["private"].items() if k not in ("alg", "use")}
    with pytest.raises(JwkError, match="ROCA"):
        parse_decryption_jwk(private)
