"""Client side of DPoP for demos and benchmarks: an ES256 key and the compact JWS/proofs it signs.

`gateway dpop-proof --key KEY.pem --method GET --url URL --token TOKEN` prints one fresh
proof (RFC 9449 §4.2); `--jkt` prints the key's RFC 7638 thumbprint, the `cnf.jkt` an
issuer puts in tokens bound to it. The gateway itself only verifies proofs.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.jose.dpop import access_token_hash, jwk_thumbprint


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def es256_public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC", "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def es256_compact(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS signed with ES256: raw r || s, 32 octets each (RFC 7518 §3.4)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class DpopKey:
    """A client's proof-of-possession key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.jwk = es256_public_jwk(self.key)
        self.jkt = jwk_thumbprint(self.jwk)

    @classmethod
    def load(cls, path: str | Path) -> DpopKey:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the DPoP key must be a P-256 EC private key in PEM")
        return cls(key)

    def save(self, path: str | Path) -> None:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)

    def proof(self, method: str, url: str, token: str | None = None, nonce: str | None = None) -> str:
        claims: dict[str, Any] = {"jti": b64url(os.urandom(16)), "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            claims["ath"] = access_token_hash(token)
        if nonce is not None:
            claims["nonce"] = nonce
        return es256_compact(self.key, {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}, claims)
