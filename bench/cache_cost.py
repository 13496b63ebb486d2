"""Cost of authenticating a token: a verified-token cache hit against a full verification (RS256, ES256).

    .venv/bin/python bench/cache_cost.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.authn import Authenticator
from gateway.config.load import parse_config
from gateway.keystore import KeyStore
from gateway.metrics import Metrics
from gateway.runtime import build_runtime
from gateway.token_cache import TokenCache


def b64(n: int, size: int | None = None) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size or (n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


async def main() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rp, ep = rsa_key.public_key().public_numbers(), ec_key.public_key().public_numbers()
    jwks = {"keys": [
        {"kty": "RSA", "kid": "r", "n": b64(rp.n), "e": b64(rp.e)},
        {"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(ep.x, 32), "y": b64(ep.y, 32)},
    ]}
    text = f"""
issuers:
  - name: bench
    issuer: "https://issuer.bench/"
    audiences: [bench]
    algorithms: [RS256, ES256]
    jwks: {{inline: {json.dumps(jwks)}}}
routes:
  - name: api
    match: {{prefix: /}}
"""
    config = parse_config(text, source="<bench>", base_dir=Path("."), environ={})
    keystore = KeyStore(config.issuers)
    await keystore.start()
    runtime = build_runtime(config, keystore)
    route = runtime.router.match("GET", None, "/x")
    assert route is not None
    now = int(time.time())
    claims = {"iss": "https://issuer.bench/", "aud": "bench", "sub": "u", "iat": now, "exp": now + 3600}
    n = 5000
    results: dict[str, Any] = {}
    for alg, key, kid in (("RS256", rsa_key, "r"), ("ES256", ec_key, "e")):
        tokens = [jwt.encode({**claims, "jti": str(i)}, key, algorithm=alg, headers={"kid": kid}) for i in range(n)]
        for label, cache_size in (("miss", 0), ("hit", 10)):
            authn = Authenticator(TokenCache(cache_size, 300), Metrics())
            batch = tokens if label == "miss" else [tokens[0]] * n
            await authn.authenticate(batch[0], route, runtime.issuers, 8192)
            start = time.perf_counter()
            for token in batch:
                await authn.authenticate(token, route, runtime.issuers, 8192)
            results[f"{alg} {label}"] = round((time.perf_counter() - start) / n * 1e6, 2)
    await keystore.close()
    print(json.dumps({"us_per_authenticate": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
