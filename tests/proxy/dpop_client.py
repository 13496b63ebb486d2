"""A DPoP client for the proxy tests: its own key, proofs minted with PyJWT (never the gateway's code)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.proxy.harness import b64url_uint


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DpopClient:
    """One client key pair: its public JWK, RFC 7638 thumbprint, and proofs for requests."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64url_uint(pub.x, 32), "y": b64url_uint(pub.y, 32)}
        # RFC 7638 §3: the required members, sorted, no whitespace, SHA-256.
        canonical = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        self.jkt = _b64(hashlib.sha256(canonical.encode()).digest())

    def proof(
        self, method: str, url: str, token: str | None = None, *, nonce: str | None = None, iat: float | None = None,
        jti: str | None = None, headers: dict[str, Any] | None = None, **claims: Any,
    ) -> str:
        payload: dict[str, Any] = {"jti": jti or uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(iat or time.time())}
        if token is not None:
            payload["ath"] = _b64(hashlib.sha256(token.encode("ascii")).digest())
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims)
        head = {"typ": "dpop+jwt", "jwk": self.jwk, **(headers or {})}
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, self.key, algorithm="ES256", headers=head)
