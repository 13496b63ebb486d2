"""What the fuzz targets share: fixed test keys, token minting, a byte reader, and the atheris entry point.

Targets expose `check(data: bytes) -> None`, which raises AssertionError when an
invariant breaks. They import nothing of atheris, so the seed corpora and the
checked-in regressions also run under plain pytest (tests/fuzz/).
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ISSUER = "https://idp.fuzz.test/"
AUDIENCE = "fuzz-api"
# Verification runs at a pinned instant, so seed tokens never expire.
NOW = 1_900_000_000
HS_SECRET = b"fuzz-hs256-secret-of-at-least-32-bytes!!"
# Deterministic private keys (fixed scalars / seeds): seeds signed once stay valid.
EC_KEY = ec.derive_private_key(0x5EED_F022_0001_2026_ABCD_EF01_2345_6789, ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_int(value: int, size: int) -> str:
    return b64u(value.to_bytes(size, "big"))


def ec_public_jwk(kid: str = "ec-1") -> dict[str, Any]:
    pub = EC_KEY.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "kid": kid, "x": b64u_int(pub.x, 32), "y": b64u_int(pub.y, 32)}


def ed_public_jwk(kid: str = "ed-1") -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    raw = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(raw)}


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW - 60, "exp": NOW + 3600}
    base.update(extra)
    return base


class Reader:
    """Consumes fuzz bytes front to back; past the end it yields zeros (never raises)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def chunk(self) -> bytes:
        """Bytes up to the next NUL (or the end)."""
        end = self.data.find(b"\x00", self.pos)
        end = len(self.data) if end < 0 else end
        piece = self.data[self.pos : end]
        self.pos = end + 1
        return piece

    def rest(self) -> bytes:
        piece = self.data[self.pos :]
        self.pos = len(self.data)
        return piece


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def main(module: str, instrument: Sequence[str] = ("gateway",), setup: Callable[[], None] | None = None) -> None:
    """Run `module.check` under atheris with the given packages instrumented for coverage."""
    import atheris

    with atheris.instrument_imports(include=list(instrument)):
        target = importlib.import_module(module)
    if setup is not None:
        setup()
    prepare = getattr(target, "prepare", None)
    if prepare is not None:
        prepare()
    atheris.Setup(sys.argv, target.check)
    atheris.Fuzz()
