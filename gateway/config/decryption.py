"""The `decryption` section: the gateway's JWE private keys and the alg / enc allow-lists, validated at load.

Every mistake is reported with its key path and line, like the rest of the
config: a key source that is not exactly one of `file` / `env`, a key set that
does not load (a public key where a private one is needed, RSA below 2048 bits,
an `oct` key of the wrong length for its `alg`, a JWK `alg` that does not fit
the key), an algorithm outside the tables (RSA1_5 and PBES2 with the reason they
are never accepted), and an allowed `alg` that no key can serve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.config.model import DecryptionConfig
from gateway.config.reader import At, Block, Reader, child_path, value_line
from gateway.config.secret import SecretSource, locate_secret, secret_bytes
from gateway.config.yaml_lines import MarkedMap, MarkedSeq
from gateway.jose.jwe_algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk_set
from gateway.jose.jwk import JwkError

__all__ = ["DECRYPTION_SECTION", "MAX_KEYS_FILE_BYTES", "REQUIRE_ENCRYPTION", "parse_decryption"]

DECRYPTION_KEYS = ("keys", "algorithms", "encryption")
MAX_KEYS_FILE_BYTES = 1 << 20
# Names a user may reach for, and why each is refused (RFC 8725 §3.2; RFC 7518 §4.8).
_NEVER = {
    "RSA1_5": "RSA1_5 is never accepted: PKCS #1 v1.5 decryption is a padding oracle (RFC 8725 §3.2); use RSA-OAEP-256",
    "none": "'none' is not a key-management algorithm",
}
_PBES2 = "PBES2 (password-based) is never accepted: a password is not a key the gateway should hold"


def _read_require(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "require_encryption" in m and (required := r.boolean(m["require_encryption"])) is not None:
        kw["require_encryption"] = required


# issuers[].require_encryption: one more block of an issuer (see issuers.ISSUER_BLOCKS).
REQUIRE_ENCRYPTION = Block(("require_encryption",), _read_require)


def _read_section(r: Reader, _at: At, found: Mapping[str, At], fields: dict[str, Any]) -> None:
    if "decryption" in found:
        if (decryption := parse_decryption(r, found["decryption"])) is not None:
            fields["decryption"] = decryption
        return
    # No private keys: an issuer that requires encryption could never be served.
    for where in _require_encryption_true(found.get("issuers")):
        r.error(where, "needs a top-level decryption block (the gateway's private keys) to decrypt tokens")


DECRYPTION_SECTION = Block(("decryption",), _read_section)


def _require_encryption_true(issuers: At | None) -> list[At]:
    if issuers is None or not isinstance(issuers.value, MarkedSeq):
        return []
    out = []
    for i, item in enumerate(issuers.value):
        if isinstance(item, MarkedMap) and item.get("require_encryption") is True:
            path = child_path(f"{issuers.path}[{i}]", "require_encryption")
            out.append(At(True, path, value_line(item, "require_encryption")))
    return out


def parse_decryption(p: Reader, at: At) -> DecryptionConfig | None:
    """The validated `decryption` block, or None after reporting why not."""
    m = p.mapping(at, DECRYPTION_KEYS, required=DECRYPTION_KEYS)
    if m is None:
        return None
    loaded = _keys(p, m["keys"]) if "keys" in m else None
    algorithms = _algorithms(p, m["algorithms"]) if "algorithms" in m else None
    encryption = _encryption(p, m["encryption"]) if "encryption" in m else None
    if loaded is None or algorithms is None or encryption is None:
        return None
    source, keys = loaded
    ok = True
    for alg in algorithms:
        if not any(key.fits(alg) for key in keys.keys):
            p.error(m["algorithms"], f"{alg}: no key in decryption.keys can serve it (check each key's kty, size and alg)")
            ok = False
    if "dir" in algorithms and not any(enc in key.dir_enc for key in keys.keys for enc in encryption):
        p.error(m["algorithms"], "dir: no oct key has the length of an allowed encryption's key")
        ok = False
    if not ok:
        return None
    return DecryptionConfig(kind=source.kind, location=source.name, algorithms=algorithms, encryption=encryption)


def _keys(p: Reader, at: At) -> tuple[SecretSource, DecryptionKeySet] | None:
    # Private keys are secrets: {file: PATH} or {env: VAR}, never inline, never quoted in a message.
    source = locate_secret(p, at)
    if source is None:
        return None
    raw = secret_bytes(p, source, what="decryption key file", limit=MAX_KEYS_FILE_BYTES)
    if raw is None:
        return None
    where = source.name if source.kind == "file" else f"environment variable {source.name}"
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        p.error(source.at, f"{where} is not JSON")
        return None
    try:
        keys, _ = parse_decryption_jwk_set(document)
    except JwkError as exc:
        p.error(source.at, f"{where}: {exc.description}")
        return None
    return source, keys


def _algorithms(p: Reader, at: At) -> tuple[str, ...] | None:
    def check(item: At, alg: str) -> bool:
        if alg in KEY_MANAGEMENT:
            return True
        why = _NEVER.get(alg) or (_PBES2 if alg.startswith("PBES2") else None)
        p.error(item, why or f"unknown key-management algorithm {alg!r} (supported: {', '.join(KEY_MANAGEMENT)})")
        return False

    return p.strings(at, what="algorithm", check=check)


def _encryption(p: Reader, at: At) -> tuple[str, ...] | None:
    def check(item: At, enc: str) -> bool:
        if enc in CONTENT_ENCRYPTION:
            return True
        p.error(item, f"unknown content-encryption algorithm {enc!r} (supported: {', '.join(CONTENT_ENCRYPTION)})")
        return False

    return p.strings(at, what="encryption algorithm", check=check)
