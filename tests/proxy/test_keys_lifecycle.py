"""Keys through the gateway: IdP down at start and after, rotation with single-flight, revocation of cached tokens."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.harness import Issuer, rsa_jwk, wait_for

FAST_REFETCH = BASE_CONFIG.replace("min_refresh_interval: 1s", "min_refresh_interval: 50ms")
_NEW_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_idp_down_at_start_then_recovers_without_restart(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    issuer.failing = True
    gateway = await make_gateway(wait_keys=False)
    await wait_for(lambda: issuer.fetches >= 1)
    async with http.get(admin_url(gateway, "/readyz")) as resp:
        assert resp.status == 503
        assert (await resp.json())["issuers_without_keys"] == ["corp"]
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token())) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
    issuer.failing = False
    await wait_for(lambda: not gateway.keystore.missing(), timeout=8)  # first retry after 1s of backoff
    async with http.get(admin_url(gateway, "/readyz")) as resp:
        assert resp.status == 200
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token())) as resp:
        assert resp.status == 200


async def test_idp_down_after_start_keeps_serving_with_cached_keys(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(FAST_REFETCH)
    issuer.failing = True
    await asyncio.sleep(0.06)  # past min_refresh_interval, so the unknown kid really refetches
    before = issuer.fetches
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token(kid="unknown"))) as resp:
        assert resp.status == 401
    assert issuer.fetches == before + 1  # it tried, and failed
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token())) as resp:
        assert resp.status == 200
    assert 'result="http_error"' in gateway.metrics.exposition().decode()


async def test_rotation_new_kid_accepted_after_exactly_one_fetch(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(FAST_REFETCH)
    issuer.keys.append(rsa_jwk(_NEW_RSA, "rsa-2"))
    issuer.rsa_key, old_key = _NEW_RSA, issuer.rsa_key
    token = issuer.token(kid="rsa-2")
    issuer.rsa_key = old_key
    await asyncio.sleep(0.06)
    before = issuer.fetches

    async def one() -> int:
        async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
            return resp.status

    statuses = await asyncio.gather(*(one() for _ in range(100)))
    assert statuses == [200] * 100
    assert issuer.fetches == before + 1


async def test_revoked_key_stops_working_for_cached_tokens(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway(FAST_REFETCH)
    token = issuer.token()
    for _ in range(2):  # the second request is served from the verified-token cache
        async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
            assert resp.status == 200
    assert 'gateway_jwt_cache_lookups_total{result="hit"} 1.0' in gateway.metrics.exposition().decode()
    issuer.keys = [k for k in issuer.keys if k["kid"] != "rsa-1"]
    await asyncio.sleep(0.06)
    # Any refresh picks up the new set; an unknown kid forces one now.
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token(kid="other"))) as resp:
        assert resp.status == 401
    async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
        assert resp.status == 401
        assert json.loads(await resp.read())["error_description"] == "the token's signing key is unknown"
