"""RFC 7516 Appendix A and RFC 7520 §5 compact JWE examples, one test id per file.

`expect: decrypt` files must decrypt, through the gateway's own key loader and
decryptor, to exactly the RFC plaintext; a flipped bit anywhere must then be
refused.  `expect: refused_by_policy` files (RSA1_5, PBES2, zip) must be
refused, and a reference library (jwcrypto, told to allow the algorithm)
decrypts them to the recorded plaintext, so the files are known-good and the
refusal is ours alone.  RFC 7520 §5.10-5.13 exist only in the JSON
serialization, which the gateway does not accept; they are not recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jose_testkit import vectors_dir
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwe import JwePolicy, decrypt_jwe, parse_jwe
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk

ALL = JwePolicy(frozenset(KEY_MANAGEMENT), frozenset(CONTENT_ENCRYPTION))
FILES = sorted((vectors_dir() / "rfc").glob("rfc75[12][06]_*.json"))
JWE_FILES = [f for f in FILES if "jwe_compact" in json.loads(f.read_text(encoding="utf-8"))]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_recorded_set() -> None:
    names = {f.name for f in JWE_FILES}
    assert len(names) == 12  # RFC 7516 A.1-A.3, RFC 7520 §5.1-5.9
    expects = [_load(f)["expect"] for f in JWE_FILES]
    assert expects.count("decrypt") == 8 and expects.count("refused_by_policy") == 4


@pytest.mark.parametrize("path", JWE_FILES, ids=lambda p: p.stem)
def test_rfc_jwe(path: Path) -> None:
    vec = _load(path)
    token = vec["jwe_compact"]
    parts = parse_jwe(token)
    assert (parts.alg, parts.enc) == (vec["alg"], vec["enc"])
    if vec["expect"] == "decrypt":
        keys = DecryptionKeySet([parse_decryption_jwk(vec["jwk"])])
        assert decrypt_jwe(parts, keys, ALL) == vec["plaintext"].encode("utf-8")
        # Every segment after the header is covered: one flipped bit in each is refused.
        segments = token.split(".")
        for index in range(1, 5):
            if not segments[index]:
                continue
            tampered = list(segments)
            tampered[index] = _flip(segments[index])
            with pytest.raises(TokenError) as exc:
                decrypt_jwe(parse_jwe(".".join(tampered)), keys, ALL)
            assert exc.value.reason is Reason.DECRYPT_FAILED
        return
    assert vec["expect"] == "refused_by_policy"
    with pytest.raises(TokenError) as exc:
        # The key cannot be a reason: a JWE refused by policy is refused before any key is looked at.
        decrypt_jwe(parts, DecryptionKeySet([]), ALL)
    assert exc.value.reason is Reason.ALG_NOT_ALLOWED
    if vec["jwk"] is not None:
        ref = jwcrypto_jwe.JWE(algs=[vec["alg"], vec["enc"]])
        ref.deserialize(token, key=jwcrypto_jwk.JWK(**vec["jwk"]))
        assert ref.payload == vec["plaintext"].encode("utf-8")


def _flip(segment: str) -> str:
    # Change the first character: a different, still canonical, base64url value.
    first = segment[0]
    return ("B" if first == "A" else "A") + segment[1:]
