"""Differential tests of the JWE layer against joserfc and jwcrypto (hypothesis).

1. Tokens either library encrypts, for every alg x enc the gateway supports and
   every key type that fits, we decrypt to the same plaintext.
2. Random corruptions of a valid JWE: whenever joserfc or jwcrypto refuses, we
   refuse; when we accept, it is the original plaintext.
3. Where we are stricter than both, the cases are listed in one test.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from joserfc import jwe as joserfc_jwe
from joserfc import jwk as joserfc_jwk
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwe_testkit import compact, content_encrypt, encrypt, private_jwk

from gateway.jose.errors import TokenError
from gateway.jose.jwe import JwePolicy, decrypt_jwe, parse_jwe
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk

ALL = JwePolicy(frozenset(KEY_MANAGEMENT), frozenset(CONTENT_ENCRYPTION))
ENCS = sorted(CONTENT_ENCRYPTION)
ALGS = sorted(KEY_MANAGEMENT)


@dataclass(frozen=True, slots=True)
class Recipient:
    name: str
    jwk: dict[str, Any]  # private


@cache
def _keys() -> dict[str, Recipient]:
    made: dict[str, Any] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "x25519": x25519.X25519PrivateKey.generate(),
        "oct16": os.urandom(16),
        "oct24": os.urandom(24),
        "oct32": os.urandom(32),
        "oct48": os.urandom(48),
        "oct64": os.urandom(64),
    }
    return {name: Recipient(name, private_jwk(key, kid=name)) for name, key in made.items()}


def _pairs() -> list[tuple[str, str, str]]:
    """Every (alg, enc, key) the gateway supports."""
    out = []
    for alg in ALGS:
        km = KEY_MANAGEMENT[alg]
        for enc in ENCS:
            cek = CONTENT_ENCRYPTION[enc].cek_bytes
            if km.family == "RSA-OAEP":
                names = ["rsa"]
            elif km.family == "ECDH-ES":
                names = ["p256", "p384", "p521", "x25519"]
            elif km.family == "dir":
                names = [f"oct{cek}"]
            else:
                names = [f"oct{km.kek_bytes}"]
            out += [(alg, enc, name) for name in names]
    return out


PAIRS = _pairs()


def ours(token: str, recipient: Recipient) -> bytes | None:
    try:
        return decrypt_jwe(parse_jwe(token), DecryptionKeySet([parse_decryption_jwk(recipient.jwk)]), ALL)
    except TokenError:
        return None


def with_joserfc(token: str, recipient: Recipient, alg: str, enc: str) -> bytes | None:
    try:
        key = joserfc_jwk.import_key(recipient.jwk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns on RSA1_5, which we name on purpose
            out = joserfc_jwe.decrypt_compact(token, key, algorithms=[alg, enc])
        return bytes(out.plaintext) if out.plaintext is not None else None
    except Exception:
        return None


def with_jwcrypto(token: str, recipient: Recipient, alg: str, enc: str) -> bytes | None:
    try:
        obj = jwcrypto_jwe.JWE(algs=[alg, enc])
        obj.deserialize(token, key=jwcrypto_jwk.JWK(**recipient.jwk))
        return bytes(obj.payload)
    except Exception:
        return None


def encrypt_with(lib: str, alg: str, enc: str, recipient: Recipient, plaintext: bytes) -> str:
    header = {"alg": alg, "enc": enc, "kid": recipient.name, "cty": "JWT"}
    if lib == "joserfc":
        key = joserfc_jwk.import_key(recipient.jwk)
        return joserfc_jwe.encrypt_compact(header, plaintext, key, algorithms=[alg, enc])
    obj = jwcrypto_jwe.JWE(plaintext, protected=json.dumps(header), algs=[alg, enc])
    obj.add_recipient(jwcrypto_jwk.JWK(**recipient.jwk))
    token: str = obj.serialize(compact=True)
    return token


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_supported_combination_is_covered() -> None:
    assert len(PAIRS) == 6 * (2 + 4 * 4 + 3 + 3 + 1)  # 6 enc x (RSA x2, ECDH x4 curves x4, KW x3, GCMKW x3, dir)


@pytest.mark.parametrize("lib", ["joserfc", "jwcrypto"])
@pytest.mark.parametrize(("alg", "enc", "name"), PAIRS, ids=lambda v: str(v))
def test_each_combination_from_each_library(lib: str, alg: str, enc: str, name: str) -> None:
    recipient = _keys()[name]
    plaintext = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2ln"
    assert ours(encrypt_with(lib, alg, enc, recipient, plaintext), recipient) == plaintext


@FAST
@given(
    pair=st.sampled_from(PAIRS),
    lib=st.sampled_from(["joserfc", "jwcrypto"]),
    plaintext=st.binary(min_size=0, max_size=300),
)
def test_they_encrypt_we_decrypt(pair: tuple[str, str, str], lib: str, plaintext: bytes) -> None:
    alg, enc, name = pair
    recipient = _keys()[name]
    token = encrypt_with(lib, alg, enc, recipient, plaintext)
    assert ours(token, recipient) == plaintext


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def corruptions(draw: st.DrawFn, token: str) -> str:
    kind = draw(st.sampled_from(["flip", "drop", "insert", "truncate_segment", "swap_segments", "pad", "dot"]))
    event(kind)
    i = draw(st.integers(0, len(token) - 1))
    if kind == "flip":
        c = draw(st.sampled_from(_ALPHABET.replace(token[i], "") if token[i] in _ALPHABET else _ALPHABET))
        return token[:i] + c + token[i + 1 :]
    if kind == "drop":
        return token[:i] + token[i + 1 :]
    if kind == "insert":
        return token[:i] + draw(st.sampled_from(_ALPHABET + ".=+/ ")) + token[i:]
    parts = token.split(".")
    j = draw(st.integers(0, len(parts) - 1))
    if kind == "truncate_segment":
        parts[j] = parts[j][: draw(st.integers(0, max(0, len(parts[j]) - 1)))]
    elif kind == "swap_segments":
        k = draw(st.integers(0, len(parts) - 1))
        parts[j], parts[k] = parts[k], parts[j]
    elif kind == "pad":
        parts[j] += "="
    else:
        parts.insert(j, "")
    return ".".join(parts)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), pair=st.sampled_from(PAIRS), lib=st.sampled_from(["joserfc", "jwcrypto"]))
def test_corruptions_refused_whenever_either_refuses(data: st.DataObject, pair: tuple[str, str, str], lib: str) -> None:
    alg, enc, name = pair
    recipient = _keys()[name]
    plaintext = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2ln"
    token = encrypt_with(lib, alg, enc, recipient, plaintext)
    bad = data.draw(corruptions(token))
    mine = ours(bad, recipient)
    theirs = (with_joserfc(bad, recipient, alg, enc), with_jwcrypto(bad, recipient, alg, enc))
    if mine is not None:
        # We accept only what both references accept, and only the original plaintext.
        assert mine == plaintext
        assert theirs == (plaintext, plaintext)
    event("refused by us" if mine is None else "accepted (a no-op corruption)")
    if mine is None and None not in theirs:
        event("we are stricter")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_where_we_are_stricter() -> None:
    """Every case here is refused by us and accepted by at least one reference library;
    which one is pinned, so a change in either shows up here."""
    r = _keys()["oct16"]
    rsa_r = _keys()["rsa"]
    key = bytes.fromhex(_hex(r.jwk["k"]))
    good = encrypt({"alg": "A128KW", "enc": "A128GCM", "cty": "JWT"}, b"a.b.c", key)
    assert ours(good, r) == b"a.b.c"
    h, ek, iv, ct, tag = good.split(".")
    legacy = jwcrypto_jwe.JWE(b"a.b.c", protected=json.dumps({"alg": "RSA1_5", "enc": "A128GCM"}), algs=["RSA1_5", "A128GCM"])
    legacy.add_recipient(jwcrypto_jwk.JWK(**rsa_r.jwk))
    zipped = jwcrypto_jwe.JWE(
        b"a.b.c", protected=json.dumps({"alg": "A128KW", "enc": "A128GCM", "zip": "DEF"}), algs=["A128KW", "A128GCM"]
    )
    zipped.add_recipient(jwcrypto_jwk.JWK(**r.jwk))
    dup = b'{"alg":"A128KW","enc":"A128GCM","cty":"JWT","cty":"JWT"}'
    # why -> (token, recipient, accepted by jwcrypto, accepted by joserfc)
    stricter: dict[str, tuple[str, Recipient, bool, bool]] = {
        # RFC 4648 §3.5: unused low bits of the last character set, so two strings decode to the same bytes.
        "non-canonical base64url in the tag": (".".join([h, ek, iv, ct, tag[:-1] + _twin(tag[-1])]), r, True, False),
        # RFC 7515 §4 (via RFC 7516 §4): duplicate members are ambiguous; jwcrypto keeps the last.
        "duplicate member in the protected header": (_reencrypt(dup, key), r, True, True),
        # RFC 8725 §3.2: padding oracle. Not in our tables, whatever the config says.
        "RSA1_5 key management": (legacy.serialize(compact=True), rsa_r, True, True),
        # Compression before encryption leaks through length; jwcrypto decompresses when the algs allow.
        "zip: DEF": (zipped.serialize(compact=True), r, True, False),
    }
    for why, (token, recipient, by_jwcrypto, by_joserfc) in stricter.items():
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))
        alg, enc = header["alg"], header["enc"]
        assert ours(token, recipient) is None, why
        assert (with_jwcrypto(token, recipient, alg, enc) == b"a.b.c") is by_jwcrypto, why
        assert (with_joserfc(token, recipient, alg, enc) == b"a.b.c") is by_joserfc, why


def _hex(b64: str) -> str:
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()


def _twin(last: str) -> str:
    # A 16-byte tag is 22 characters, the last carrying 2 data bits and 4 unused ones:
    # flipping the lowest bit changes the text, not the decoded bytes.
    value = _ALPHABET.index(last)
    return _ALPHABET[value | 1] if value % 2 == 0 else _ALPHABET[value & ~1]


def _reencrypt(raw_header: bytes, key: bytes) -> str:
    cek = os.urandom(16)
    iv = os.urandom(12)
    ct, tag = content_encrypt("A128GCM", cek, iv, b"a.b.c", _b64(raw_header).encode())
    return compact(raw_header, aes_key_wrap(key, cek), iv, ct, tag)
