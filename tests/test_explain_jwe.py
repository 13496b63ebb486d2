"""`gateway explain` on encrypted tokens: the JWE header, the decryption step, then the inner JWS's checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.explain import Explanation, explain

SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RECIPIENT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = 1_800_000_000

CONFIG = """\
issuers:
  - name: corp
    issuer: "https://corp.example/"
    algorithms: [RS256]
    jwks: {file: jwks.json}
    require_encryption: true
forward:
  claims_to_headers:
    sub: X-User-Id
routes:
  - name: api
    match: {prefix: /api}
decryption:
  keys: {file: jwe-keys.json}
  algorithms: [RSA-OAEP-256]
  encryption: [A256GCM]
"""


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def _private_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    n = key.private_numbers()
    return {
        "kty": "RSA", "kid": kid, "n": _b64(n.public_numbers.n), "e": _b64(n.public_numbers.e), "d": _b64(n.d),
        "p": _b64(n.p), "q": _b64(n.q), "dp": _b64(n.dmp1), "dq": _b64(n.dmq1), "qi": _b64(n.iqmp),
    }  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    root: Path = tmp_path_factory.mktemp("explain-jwe")
    pub = SIGNER.public_key().public_numbers()
    signing = {"kty": "RSA", "kid": "k1", "alg": "RS256", "n": _b64(pub.n), "e": _b64(pub.e)}
    (root / "jwks.json").write_text(json.dumps({"keys": [signing]}))
    (root / "jwe-keys.json").write_text(json.dumps({"keys": [_private_jwk(RECIPIENT, "enc-1")]}))
    (root / "gateway.yaml").write_text(CONFIG)
    return load_config(root / "gateway.yaml")


def signed(**claims: Any) -> str:
    body = {"iss": "https://corp.example/", "sub": "alice", "iat": NOW - 60, "exp": NOW + 600, **claims}
    return jwt.encode(body, SIGNER, algorithm="RS256", headers={"kid": "k1"})


def encrypted(jws: str, to: rsa.RSAPrivateKey = RECIPIENT) -> str:
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "enc-1", "cty": "JWT"}
    obj = jwcrypto_jwe.JWE(jws.encode(), protected=json.dumps(header), algs=["RSA-OAEP-256", "A256GCM"])
    pub = _private_jwk(to, "enc-1")
    obj.add_recipient(jwcrypto_jwk.JWK(kty="RSA", n=pub["n"], e=pub["e"]))
    token: str = obj.serialize(compact=True)
    return token


async def run(config: GatewayConfig, token: str) -> Explanation:
    return await explain(config, token, path="/api/orders", offline=True, clock=lambda: float(NOW))


async def test_an_encrypted_token_is_explained_step_by_step(config: GatewayConfig) -> None:
    token = encrypted(signed())
    result = await run(config, token)
    text = result.text()
    assert result.allowed, text
    assert 'jwe header {"alg": "RSA-OAEP-256", "cty": "JWT", "enc": "A256GCM", "kid": "enc-1"}' in text
    assert '"sub": "alice"' in text  # the inner claims, once our key opened it
    assert "decryption (JWE)" in result.lines
    assert "ok   compact JWE: alg RSA-OAEP-256, enc A256GCM, cty JWT, key enc-1 (RSA); a compact JWS inside" in text
    assert result.lines.index("decryption (JWE)") < result.lines.index("decoding") < result.lines.index("signature")
    assert "X-User-Id: alice" in text
    for segment in token.split(".")[1:]:
        assert segment not in text  # never the encrypted key, IV, ciphertext or tag


async def test_refusals_name_the_decryption_step(config: GatewayConfig) -> None:
    result = await run(config, encrypted(signed(), to=STRANGER))
    text = result.text()
    assert not result.allowed
    assert "FAIL compact JWE: decrypt_failed: The encrypted token could not be decrypted." in text
    assert "the encrypted token could not be decrypted" in text  # the 401's description
    result = await run(config, signed())
    assert "FAIL require_encryption: issuer corp accepts only JWE tokens" in result.text()
    assert "the token must be encrypted" in result.text()
