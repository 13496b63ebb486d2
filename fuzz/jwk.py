"""Fuzz JWK and JWK Set parsing: what loads is a usable public verification key, and nothing leaks.

Input: byte 0 bit 0 is `allow_oct`; the rest is a JSON document (UTF-8, replacement
for bad bytes) handed to `parse_jwk_set` once parsed (anything JSON can express).

Invariants: the only exception is JwkError; a loaded set has at most
MAX_KEYS_PER_SET keys; each key's algs are supported, fit its kty/curve, honour the
JWK's own `alg`/`use`/`key_ops`; `oct` only when allowed; RSA sizes in range;
`select` only offers keys that fit the alg; and no error or skip sentence echoes
a string member value of the input (key material, kids) longer than 12 characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fuzz.common import Reader
from gateway.jose.algorithms import MAX_RSA_BITS, MIN_RSA_BITS, SUPPORTED
from gateway.jose.errors import TokenError
from gateway.jose.jwk import MAX_KEYS_PER_SET, JwkError, parse_jwk_set

_FAMILY = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "oct": {"HS256", "HS384", "HS512"},
}
_CURVE = {"P-256": {"ES256"}, "P-384": {"ES384"}, "P-521": {"ES512"}, "Ed25519": {"EdDSA", "Ed25519"}, "Ed448": {"EdDSA", "Ed448"}}
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _allowed_algs(key_kty: str, crv: str | None) -> set[str]:
    if key_kty in _FAMILY:
        return _FAMILY[key_kty]
    return _CURVE.get(crv or "", set())


def _assert_no_echo(sentence: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in sentence, "a JWK error sentence echoes input"


def check(data: bytes) -> None:
    reader = Reader(data)
    allow_oct = bool(reader.byte() & 1)
    try:
        document = json.loads(reader.rest().decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return
    # Member values (key material, kids) long enough not to occur in a fixed sentence by chance.
    secrets = [s for s in _strings(document) if len(s) > 12 and not s.replace(" ", "").isalpha()]
    try:
        key_set, skipped = parse_jwk_set(document, allow_oct=allow_oct)
    except JwkError as exc:
        _assert_no_echo(str(exc), secrets)
        return
    for sentence in skipped:
        _assert_no_echo(sentence, secrets)
    assert len(key_set) <= MAX_KEYS_PER_SET
    entries = document["keys"]
    by_identity = [e for e in entries if isinstance(e, dict)]
    for key in key_set.keys:
        assert key.algs <= SUPPORTED
        assert key.kty in ("RSA", "EC", "OKP") or (key.kty == "oct" and allow_oct), f"kty {key.kty} loaded"
        assert key.algs <= _allowed_algs(key.kty, key.crv), f"{key.kty}/{key.crv} may verify {sorted(key.algs)}"
        if key.kty == "RSA":
            assert MIN_RSA_BITS <= key.size <= MAX_RSA_BITS
        if key.alg is not None:
            assert key.algs <= {key.alg}
        if key.use is not None and key.use != "sig":
            assert not key.algs
        if key.key_ops is not None and "verify" not in key.key_ops:
            assert not key.algs
        # The JWK it came from held no private member (a verifier never needs one).
        sources = [e for e in by_identity if e.get("kid") == key.kid and e.get("kty") == key.kty]
        assert any(not any(p in e for p in _PRIVATE) or key.kty == "oct" for e in sources), "a private JWK loaded"
    for alg in ("RS256", "ES256", "EdDSA", "HS256", "PS512", "ES512"):
        for kid in [None, *key_set.kids[:4]]:
            try:
                offered = key_set.select(alg, kid)
            except TokenError:
                continue
            assert offered and all(alg in k.algs for k in offered), "select offered a key unfit for the alg"
            assert kid is None or all(k.kid == kid for k in offered)
