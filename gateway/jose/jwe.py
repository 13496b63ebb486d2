"""Parse and decrypt a JWE compact serialization (RFC 7516 §7.1) as strictly as a JWS, and unwrap a nested JWT.

Structure is checked the JWS way, with the JWS helpers (size cap first, five
unpadded canonical base64url segments, a header that is a JSON object without
duplicate members, `crit` understood or refused): a fault there is `malformed`.
Header policy that needs no secret (an `alg`/`enc` outside the allow-lists or
the tables, `zip`, a `cty` that is not JWT) keeps its own reason.  Everything
after that, from key selection to the last padding byte, fails as ONE reason
with ONE sentence (`decrypt_failed`), and a failed key unwrap continues with a
random CEK (RFC 7516 §11.5) so that neither the answer nor the work done tells
a padding or key fault from a tag fault.  The JWE adds confidentiality only:
the plaintext is handed back as a compact JWS for the ordinary verifier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe_algorithms import (
    CONTENT_ENCRYPTION,
    KEY_MANAGEMENT,
    ContentEncryption,
    CryptoFailure,
    KeyManagement,
    aes_gcm_decrypt,
    aes_unwrap,
    cbc_hmac_decrypt,
    concat_kdf,
    ecdh_shared_secret,
    rsa_oaep_decrypt,
)
from gateway.jose.jwe_keys import DecryptionKey, DecryptionKeySet
from gateway.jose.jwk import EC_CURVES, JwkError, b64_member
from gateway.jose.jws import b64decode_segment, check_crit, json_object, match_compact

__all__ = [
    "JweParts",
    "JwePolicy",
    "NestedJws",
    "decrypt_jwe",
    "ephemeral_public_key",
    "is_compact_jwe",
    "parse_jwe",
    "unwrap_nested_jws",
]

# Five base64url segments.  The header is never empty; the encrypted key is empty
# for `dir` and ECDH-ES; the IV, ciphertext and tag may be empty here so that
# their absence is refused as a decryption failure, like any other wrong length.
_COMPACT: Final = re.compile(
    r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)"
)
# RFC 7519 §5.2: "JWT" says the content is a JWT; media types compare case-insensitively.
_JWT_CTY: Final = frozenset({"jwt", "application/jwt"})


@dataclass(frozen=True, slots=True)
class JweParts:
    """A structurally valid, not yet decrypted, JWE."""

    header: dict[str, Any]
    aad: bytes  # ASCII(BASE64URL(protected header)), as received (RFC 7516 §5.2 step 14)
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes
    alg: str
    enc: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class JwePolicy:
    """The `alg` and `enc` allow-lists; anything outside the tables is refused at construction."""

    algorithms: frozenset[str]
    encryption: frozenset[str]

    def __post_init__(self) -> None:
        unknown = (self.algorithms - KEY_MANAGEMENT.keys()) | (self.encryption - CONTENT_ENCRYPTION.keys())
        if unknown:
            raise ValueError(f"unsupported JWE algorithms: {', '.join(sorted(unknown))}")
        if not self.algorithms or not self.encryption:
            raise ValueError("at least one alg and one enc must be allowed")


def is_compact_jwe(token: str) -> bool:
    """A five-segment token is a JWE (RFC 7516 §9: count the periods); three is a JWS."""
    return token.count(".") == 4


def parse_jwe(token: str, *, max_bytes: int = 8192) -> JweParts:
    """Split and decode a compact JWE; raises `TokenError` (malformed, too large, unsupported crit)."""
    match = match_compact(token, _COMPACT, max_bytes=max_bytes, shape="JWE of five base64url segments")
    header_b64, ek_b64, iv_b64, ct_b64, tag_b64 = match.groups()
    header = json_object(b64decode_segment(header_b64, "header"), "header")
    alg = header.get("alg")
    enc = header.get("enc")
    if not isinstance(alg, str) or not isinstance(enc, str):
        raise TokenError(Reason.MALFORMED, "The token header's alg or enc is missing or not a string.")
    check_crit(header)
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise TokenError(Reason.MALFORMED, "The token header's kid is not a string.")
    return JweParts(
        header=header,
        aad=header_b64.encode("ascii"),
        encrypted_key=b64decode_segment(ek_b64, "encrypted key"),
        iv=b64decode_segment(iv_b64, "IV"),
        ciphertext=b64decode_segment(ct_b64, "ciphertext"),
        tag=b64decode_segment(tag_b64, "tag"),
        alg=alg,
        enc=enc,
        kid=kid,
    )


@dataclass(frozen=True, slots=True)
class NestedJws:
    """What a nested JWT's decryption yields: the inner compact JWS (not yet verified),
    the outer JWE's header, and the key that decrypted it."""

    jws: str
    header: dict[str, Any]
    key: DecryptionKey


def decrypt_jwe(parts: JweParts, keys: DecryptionKeySet, policy: JwePolicy) -> bytes:
    """The plaintext, or `TokenError`: alg_not_allowed for header policy, else decrypt_failed."""
    return _decrypt(parts, keys, policy)[0]


def _decrypt(parts: JweParts, keys: DecryptionKeySet, policy: JwePolicy) -> tuple[bytes, DecryptionKey]:
    km = KEY_MANAGEMENT.get(parts.alg)
    ce = CONTENT_ENCRYPTION.get(parts.enc)
    # RFC 8725 §3.1: allow-lists before any key is touched; RSA1_5, PBES2 and none are in no table.
    if km is None or ce is None or parts.alg not in policy.algorithms or parts.enc not in policy.encryption:
        raise TokenError(Reason.ALG_NOT_ALLOWED, "The token's encryption algorithms are not allowed.")
    if "zip" in parts.header:
        # Compression before encryption leaks plaintext through ciphertext length (CRIME class).
        raise TokenError(Reason.ALG_NOT_ALLOWED, "Compressed encrypted tokens (zip) are never accepted.")
    for key in keys.select(parts.alg, parts.kid):
        try:
            cek = _content_key(key, km, ce, parts)
            return _content_decrypt(ce, cek, parts), key
        except Exception:  # noqa: S112 - CryptoFailure, or a backend surprise: the same single outcome
            continue
    raise TokenError(Reason.DECRYPT_FAILED, DECRYPT_FAILED_DESCRIPTION)


def unwrap_nested_jws(
    token: str, keys: DecryptionKeySet, policy: JwePolicy, *, max_bytes: int = 8192
) -> NestedJws:
    """Decrypt a nested JWT (RFC 7519 §5.2): the compact JWS inside, unverified. Claims
    replicated into the JWE header (RFC 7519 §5.3) are never read: identity comes from the JWS."""
    parts = parse_jwe(token, max_bytes=max_bytes)
    cty = parts.header.get("cty")
    if not isinstance(cty, str) or cty.lower() not in _JWT_CTY:
        raise TokenError(Reason.BAD_TYPE, "The encrypted token's cty does not say it holds a JWT.")
    plaintext, key = _decrypt(parts, keys, policy)
    try:
        inner = plaintext.decode("ascii")
    except UnicodeDecodeError:
        inner = ""
    # Nesting depth one: a JWE in a JWE, or bare claims, is not a signed JWT.
    if inner.count(".") != 2:
        raise TokenError(Reason.MALFORMED, "The encrypted token does not hold a signed JWT.")
    return NestedJws(inner, parts.header, key)


def _random_cek(ce: ContentEncryption) -> bytes:
    # RFC 7516 §11.5: on a failed unwrap, go on with a random CEK; the tag check then fails
    # exactly as for a bad tag, so the two are indistinguishable in answer and in work.
    return os.urandom(ce.cek_bytes)


def _content_key(key: DecryptionKey, km: KeyManagement, ce: ContentEncryption, parts: JweParts) -> bytes:
    family = km.family
    material = key.key
    ek = parts.encrypted_key
    if family == "RSA-OAEP":
        if not isinstance(material, rsa.RSAPrivateKey) or km.oaep_hash is None:
            raise CryptoFailure
        try:
            cek = rsa_oaep_decrypt(material, km.oaep_hash, ek)
        except CryptoFailure:
            return _random_cek(ce)
        return cek if len(cek) == ce.cek_bytes else _random_cek(ce)
    if family == "AESKW":
        if not isinstance(material, bytes) or len(material) != km.kek_bytes:
            raise CryptoFailure
        return _unwrap_or_random(material, ek, ce)
    if family == "AESGCMKW":
        if not isinstance(material, bytes) or len(material) != km.kek_bytes:
            raise CryptoFailure
        # RFC 7518 §4.7.1: the wrap's IV and tag travel in the (integrity-protected) header.
        iv = _header_bytes(parts.header, "iv")
        tag = _header_bytes(parts.header, "tag")
        try:
            cek = aes_gcm_decrypt(material, iv, ek, tag, b"")
        except CryptoFailure:
            return _random_cek(ce)
        return cek if len(cek) == ce.cek_bytes else _random_cek(ce)
    if family == "dir":
        # RFC 7516 §5.2 step 10: with direct encryption the encrypted key must be empty.
        if ek or not isinstance(material, bytes) or parts.enc not in key.dir_enc:
            raise CryptoFailure
        return material
    if family == "ECDH-ES":
        z = ecdh_shared_secret(_agreement_key(material), ephemeral_public_key(parts.header.get("epk"), key))
        apu = _header_bytes(parts.header, "apu", optional=True)
        apv = _header_bytes(parts.header, "apv", optional=True)
        if km.kek_bytes == 0:
            # §4.6.2: direct agreement; the KDF's AlgorithmID is the `enc`, and there is no encrypted key.
            if ek:
                raise CryptoFailure
            return concat_kdf(z, parts.enc, ce.cek_bytes, apu, apv)
        kek = concat_kdf(z, parts.alg, km.kek_bytes, apu, apv)
        return _unwrap_or_random(kek, ek, ce)
    raise CryptoFailure  # pragma: no cover - the table holds no other family


def _unwrap_or_random(kek: bytes, wrapped: bytes, ce: ContentEncryption) -> bytes:
    try:
        cek = aes_unwrap(kek, wrapped)
    except CryptoFailure:
        return _random_cek(ce)
    # A key of the wrong size for `enc` is refused the same way as a bad unwrap.
    return cek if len(cek) == ce.cek_bytes else _random_cek(ce)


def _content_decrypt(ce: ContentEncryption, cek: bytes, parts: JweParts) -> bytes:
    if ce.cbc_hash is None:
        return aes_gcm_decrypt(cek, parts.iv, parts.ciphertext, parts.tag, parts.aad)
    return cbc_hmac_decrypt(ce, cek, parts.iv, parts.ciphertext, parts.tag, parts.aad)


def _header_bytes(header: Mapping[str, Any], name: str, *, optional: bool = False) -> bytes:
    if optional and name not in header:
        return b""
    try:
        return b64_member(header, name)  # checks the alphabet: header values were not matched by _COMPACT
    except JwkError as exc:
        raise CryptoFailure from exc


def _agreement_key(material: object) -> ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey:
    if isinstance(material, (ec.EllipticCurvePrivateKey, x25519.X25519PrivateKey)):
        return material
    raise CryptoFailure


def ephemeral_public_key(
    epk: object, key: DecryptionKey
) -> ec.EllipticCurvePublicKey | x25519.X25519PublicKey:
    """The sender's ephemeral public key, on OUR key's curve and on that curve, or CryptoFailure.

    The point is validated by the constructor before any arithmetic: an off-curve point
    is how an invalid-curve attack extracts a static private key bit by bit.
    """
    if not isinstance(epk, dict) or epk.get("crv") != key.crv or epk.get("kty") != key.kty:
        raise CryptoFailure
    if "d" in epk:
        raise CryptoFailure  # an ephemeral *public* key; a private member means a confused sender
    try:
        if key.kty == "OKP":
            raw = b64_member(epk, "x")
            if len(raw) != 32:
                raise CryptoFailure
            return x25519.X25519PublicKey.from_public_bytes(raw)
        curve, size = EC_CURVES[epk["crv"]]
        x, y = b64_member(epk, "x"), b64_member(epk, "y")
        if len(x) != size or len(y) != size:
            raise CryptoFailure
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except (JwkError, ValueError, TypeError, KeyError) as exc:
        raise CryptoFailure from exc
