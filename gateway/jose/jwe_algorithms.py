"""The JWE algorithm tables (RFC 7518 §4, §5) and the primitives each entry runs.

Two tables, built once at import like the JWS table: key management (`alg`) and
content encryption (`enc`).  Every primitive here is total in the sense the
decryptor needs: it returns bytes or raises `CryptoFailure`, nothing else, so
the layer above folds every fault into one reason.  RSA1_5 (padding oracle,
RFC 8725 §3.2), PBES2-* and `none` are not in the tables and cannot be added
by configuration.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

__all__ = [
    "CONTENT_ENCRYPTION",
    "GCM_IV_BYTES",
    "GCM_TAG_BYTES",
    "KEY_MANAGEMENT",
    "ContentEncryption",
    "CryptoFailure",
    "KeyManagement",
    "aes_gcm_decrypt",
    "aes_unwrap",
    "cbc_hmac_decrypt",
    "concat_kdf",
    "ecdh_shared_secret",
    "rsa_oaep_decrypt",
]

# RFC 7518 §5.3: a 96-bit IV and a 128-bit tag; §4.7 uses the same for A*GCMKW.
GCM_IV_BYTES: Final = 12
GCM_TAG_BYTES: Final = 16
_CBC_IV_BYTES: Final = 16


class CryptoFailure(Exception):
    """A primitive refused its input; deliberately carries no detail."""


@dataclass(frozen=True, slots=True)
class ContentEncryption:
    """One `enc` (RFC 7518 §5.1): the CEK size and which construction it uses."""

    name: str
    cek_bytes: int
    cbc_hash: hashes.HashAlgorithm | None  # None: AES-GCM; else AES-CBC + HMAC-SHA-2 (RFC 7518 §5.2)


@dataclass(frozen=True, slots=True)
class KeyManagement:
    """One `alg` (RFC 7518 §4.1): the family, and the key-wrap size it implies (0 when none)."""

    name: str
    family: str  # "RSA-OAEP" | "ECDH-ES" | "AESKW" | "AESGCMKW" | "dir"
    kek_bytes: int  # A*KW / A*GCMKW / ECDH-ES+A*KW: the wrapping key's size
    oaep_hash: hashes.HashAlgorithm | None = None


CONTENT_ENCRYPTION: Final[dict[str, ContentEncryption]] = {
    e.name: e
    for e in (
        ContentEncryption("A128GCM", 16, None),
        ContentEncryption("A192GCM", 24, None),
        ContentEncryption("A256GCM", 32, None),
        # RFC 7518 §5.2.3-5.2.5: the CEK is MAC_KEY || ENC_KEY, twice the AES key size.
        ContentEncryption("A128CBC-HS256", 32, hashes.SHA256()),
        ContentEncryption("A192CBC-HS384", 48, hashes.SHA384()),
        ContentEncryption("A256CBC-HS512", 64, hashes.SHA512()),
    )
}

KEY_MANAGEMENT: Final[dict[str, KeyManagement]] = {
    k.name: k
    for k in (
        KeyManagement("RSA-OAEP", "RSA-OAEP", 0, hashes.SHA1()),  # noqa: S303 - RFC 7518 §4.3 names SHA-1 for OAEP
        KeyManagement("RSA-OAEP-256", "RSA-OAEP", 0, hashes.SHA256()),
        KeyManagement("ECDH-ES", "ECDH-ES", 0),
        KeyManagement("ECDH-ES+A128KW", "ECDH-ES", 16),
        KeyManagement("ECDH-ES+A192KW", "ECDH-ES", 24),
        KeyManagement("ECDH-ES+A256KW", "ECDH-ES", 32),
        KeyManagement("A128KW", "AESKW", 16),
        KeyManagement("A192KW", "AESKW", 24),
        KeyManagement("A256KW", "AESKW", 32),
        KeyManagement("A128GCMKW", "AESGCMKW", 16),
        KeyManagement("A192GCMKW", "AESGCMKW", 24),
        KeyManagement("A256GCMKW", "AESGCMKW", 32),
        KeyManagement("dir", "dir", 0),
    )
}


def rsa_oaep_decrypt(key: rsa.RSAPrivateKey, hash_: hashes.HashAlgorithm, ciphertext: bytes) -> bytes:
    """RSAES-OAEP with MGF1 over the same hash and an empty label (RFC 7518 §4.3)."""
    # RFC 8017 §7.1.2 step 1: the ciphertext is exactly k octets.
    if len(ciphertext) != (key.key_size + 7) // 8:
        raise CryptoFailure
    try:
        return key.decrypt(
            ciphertext, asym_padding.OAEP(mgf=asym_padding.MGF1(hash_), algorithm=hash_, label=None)
        )
    except Exception as exc:
        raise CryptoFailure from exc


def aes_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 AES key unwrap with the default IV (RFC 7518 §4.4); the integrity check is inside."""
    # A wrapped key is n+1 64-bit blocks, n >= 2 (RFC 3394 §2).
    if len(wrapped) < 24 or len(wrapped) % 8:
        raise CryptoFailure
    try:
        return aes_key_unwrap(kek, wrapped)
    except Exception as exc:
        raise CryptoFailure from exc


def aes_gcm_decrypt(key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    """AES-GCM with exactly a 96-bit IV and the full 128-bit tag (RFC 7518 §5.3, §4.7)."""
    # A shorter tag is a forgery aid (and cryptography would accept one); a zero-length IV is not GCM.
    if len(iv) != GCM_IV_BYTES or len(tag) != GCM_TAG_BYTES or len(key) not in (16, 24, 32):
        raise CryptoFailure
    try:
        return AESGCM(key).decrypt(iv, ciphertext + tag, aad)
    except Exception as exc:
        raise CryptoFailure from exc


def cbc_hmac_decrypt(
    enc: ContentEncryption, cek: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
) -> bytes:
    """AES_CBC_HMAC_SHA2 decryption (RFC 7518 §5.2.2.2): the tag is checked, in constant
    time, before any decryption or unpadding, so no padding oracle can exist."""
    hash_ = enc.cbc_hash
    if hash_ is None or len(cek) != enc.cek_bytes:
        raise CryptoFailure
    half = enc.cek_bytes // 2
    mac_key, enc_key = cek[:half], cek[half:]
    # §5.2.2.1: T is the first half of the HMAC output, exactly.
    if len(iv) != _CBC_IV_BYTES or len(tag) != half or not ciphertext or len(ciphertext) % 16:
        raise CryptoFailure
    al = struct.pack(">Q", len(aad) * 8)
    expected = hmac.digest(mac_key, aad + iv + ciphertext + al, hash_.name)[:half]
    if not hmac.compare_digest(expected, tag):
        raise CryptoFailure
    try:
        decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except Exception as exc:
        raise CryptoFailure from exc


def ecdh_shared_secret(
    private: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey,
    peer: ec.EllipticCurvePublicKey | x25519.X25519PublicKey,
) -> bytes:
    """Z for ECDH-ES (RFC 7518 §4.6.2); the peer key was built by a constructor that
    checks the point is on the curve, and must be on the private key's curve."""
    try:
        if isinstance(private, x25519.X25519PrivateKey) and isinstance(peer, x25519.X25519PublicKey):
            # cryptography refuses the all-zero output of a small-order point (RFC 7748 §6.1).
            return private.exchange(peer)
        if (
            isinstance(private, ec.EllipticCurvePrivateKey)
            and isinstance(peer, ec.EllipticCurvePublicKey)
            and peer.curve.name == private.curve.name
        ):
            return private.exchange(ec.ECDH(), peer)
    except Exception as exc:
        raise CryptoFailure from exc
    raise CryptoFailure


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def concat_kdf(z: bytes, algorithm_id: str, key_bytes: int, apu: bytes, apv: bytes) -> bytes:
    """The Concat KDF of NIST SP 800-56A §5.8.1 with SHA-256, as RFC 7518 §4.6.2 fixes its inputs."""
    other_info = (
        _length_prefixed(algorithm_id.encode("ascii"))  # AlgorithmID: `enc` for ECDH-ES, else `alg`
        + _length_prefixed(apu)  # PartyUInfo
        + _length_prefixed(apv)  # PartyVInfo
        + struct.pack(">I", key_bytes * 8)  # SuppPubInfo: keydatalen in bits
    )  # SuppPrivInfo: empty
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=key_bytes, otherinfo=other_info).derive(z)
