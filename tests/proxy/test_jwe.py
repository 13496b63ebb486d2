"""Encrypted tokens through a running gateway: nested JWTs accepted, refusals, metrics, a key file replaced on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.harness import Issuer, Upstream, b64url_uint, wait_for

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)

DECRYPTION = """
decryption:
  keys: {{file: jwe-keys.json}}
  algorithms: [RSA-OAEP-256, ECDH-ES+A256KW]
  encryption: [A256GCM, A128CBC-HS256]
"""
WITH_DECRYPTION = BASE_CONFIG + DECRYPTION
REQUIRED = WITH_DECRYPTION.replace("    algorithms: [RS256, ES256]\n", "    algorithms: [RS256, ES256]\n    require_encryption: true\n")


def rsa_private_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    n = key.private_numbers()
    return {
        "kty": "RSA", "kid": kid, "use": "enc", "n": b64url_uint(n.public_numbers.n), "e": b64url_uint(n.public_numbers.e),
        "d": b64url_uint(n.d), "p": b64url_uint(n.p), "q": b64url_uint(n.q), "dp": b64url_uint(n.dmp1),
        "dq": b64url_uint(n.dmq1), "qi": b64url_uint(n.iqmp),
    }  # fmt: skip


def ec_private_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    pub = key.public_key().public_numbers()
    return {
        "kty": "EC", "kid": kid, "crv": "P-256", "x": b64url_uint(pub.x, 32), "y": b64url_uint(pub.y, 32),
        "d": b64url_uint(key.private_numbers().private_value, 32),
    }


def write_keys(tmp_path: Path, *jwks: dict[str, Any]) -> None:
    # Written whole then renamed, as a Secret volume swaps its files.
    staging = tmp_path / "jwe-keys.json.new"
    staging.write_text(json.dumps({"keys": list(jwks)}))
    os.replace(staging, tmp_path / "jwe-keys.json")


def encrypt(jws: str, jwk: dict[str, Any], alg: str = "RSA-OAEP-256", enc: str = "A256GCM", **header: Any) -> str:
    """A nested JWT made by a reference library (jwcrypto), as an IdP would."""
    protected = {"alg": alg, "enc": enc, "kid": jwk["kid"], "cty": "JWT", **header}
    obj = jwcrypto_jwe.JWE(jws.encode(), protected=json.dumps(protected), algs=[alg, enc])
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    obj.add_recipient(jwcrypto_jwk.JWK(**public))
    token: str = obj.serialize(compact=True)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seen_header(upstream: Upstream, name: str) -> str | None:
    return next((v for k, v in upstream.seen[-1]["headers"] if k.lower() == name.lower()), None)


async def start(make_gateway: GatewayFactory, tmp_path: Path, text: str = WITH_DECRYPTION) -> GatewayProcess:
    write_keys(tmp_path, rsa_private_jwk(_RSA, "enc-rsa"), ec_private_jwk(_EC, "enc-ec"))
    return await make_gateway(text)


async def test_nested_jwt_is_decrypted_then_verified(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer, upstream: Upstream
) -> None:
    gateway = await start(make_gateway, tmp_path)
    inner = issuer.token(sub="bob")
    for jwk, alg in ((rsa_private_jwk(_RSA, "enc-rsa"), "RSA-OAEP-256"), (ec_private_jwk(_EC, "enc-ec"), "ECDH-ES+A256KW")):
        # Claims replicated into the JWE header (RFC 7519 §5.3) are never read: identity is the JWS's.
        token = encrypt(inner, jwk, alg, sub="mallory", iss="https://elsewhere.example/")
        for _ in range(2):  # the second time from the verdict cache, keyed on the JWE string
            async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
                assert resp.status == 200, await resp.text()
            assert seen_header(upstream, "X-User-Id") == "bob"
            # The payload header is the signed JWS's payload, never a segment of the JWE.
            assert seen_header(upstream, "X-Jwt-Payload") == inner.split(".")[1]
    metrics = gateway.metrics.exposition().decode()
    assert 'gateway_jwt_verify_seconds_count{issuer="corp",result="ok"}' in metrics


async def test_the_inner_jws_is_verified_like_any_token(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await start(make_gateway, tmp_path)
    jwk = rsa_private_jwk(_RSA, "enc-rsa")
    head, payload, sig = issuer.token().split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    expired = issuer.token(exp=1, iat=0)
    for inner, reason in ((forged, "signature is invalid"), (expired, "expired")):
        async with http.get(url(gateway, "/api/x"), headers=bearer(encrypt(inner, jwk))) as resp:
            assert resp.status == 401
            assert reason in resp.headers["WWW-Authenticate"]
    # A bare claims set encrypted to us (anyone can: RSA-OAEP is public-key encryption) is refused.
    claims = json.dumps(issuer.claims()).encode()
    bare = jwcrypto_jwe.JWE(claims, protected=json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}))
    bare.add_recipient(jwcrypto_jwk.JWK(**{k: v for k, v in jwk.items() if k in ("kty", "n", "e")}))
    async with http.get(url(gateway, "/api/x"), headers=bearer(bare.serialize(compact=True))) as resp:
        assert resp.status == 401
        assert "malformed" in resp.headers["WWW-Authenticate"]


async def test_every_decryption_failure_is_one_answer(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await start(make_gateway, tmp_path)
    good = encrypt(issuer.token(), rsa_private_jwk(_RSA, "enc-rsa"))
    h, ek, iv, ct, tag = good.split(".")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = [
        ".".join([h, ek, iv, ct, ("A" if tag[0] != "A" else "B") + tag[1:]]),  # tag
        ".".join([h, ("A" if ek[0] != "A" else "B") + ek[1:], iv, ct, tag]),  # OAEP padding
        ".".join([h, ek, iv, ("A" if ct[0] != "A" else "B") + ct[1:], tag]),  # ciphertext
        encrypt(issuer.token(), rsa_private_jwk(stranger, "enc-rsa")),  # another key under our kid
        encrypt(issuer.token(), rsa_private_jwk(stranger, "nobody")),  # an unknown kid
    ]
    answers = set()
    for token in bad:
        async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
            assert resp.status == 401
            body = await resp.json()
            answers.add((resp.headers["WWW-Authenticate"], body["error"], body["error_description"]))
    assert answers == {
        (
            'Bearer realm="gateway", error="invalid_token", error_description="the encrypted token could not be decrypted"',
            "invalid_token",
            "the encrypted token could not be decrypted",
        )
    }
    metrics = gateway.metrics.exposition().decode()
    # Before decryption the issuer is not known: the label is the one for unknown issuers.
    assert 'gateway_jwt_verify_seconds_count{issuer="unknown",result="decrypt_failed"} 5.0' in metrics


async def test_require_encryption_refuses_a_plain_jws(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await start(make_gateway, tmp_path, REQUIRED)
    async with http.get(url(gateway, "/api/x"), headers=bearer(issuer.token())) as resp:
        assert resp.status == 401
        assert "must be encrypted" in resp.headers["WWW-Authenticate"]
    async with http.get(url(gateway, "/api/x"), headers=bearer(encrypt(issuer.token(), rsa_private_jwk(_RSA, "enc-rsa")))) as resp:
        assert resp.status == 200
    metrics = gateway.metrics.exposition().decode()
    assert 'gateway_jwt_verify_seconds_count{issuer="corp",result="encryption_required"} 1.0' in metrics


async def test_without_a_decryption_block_every_jwe_is_refused(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway()
    token = encrypt(issuer.token(), rsa_private_jwk(_RSA, "enc-rsa"))
    async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
        assert resp.status == 401
        assert "could not be decrypted" in resp.headers["WWW-Authenticate"]
    for shape in ("a.b.c.d", "a.b.c.d.e.f", "e30.." + "." * 2):
        async with http.get(url(gateway, "/api/x"), headers=bearer(shape)) as resp:
            assert resp.status == 401
            assert "malformed" in resp.headers["WWW-Authenticate"]


async def test_key_file_replaced_on_disk_takes_effect_without_restart(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await start(make_gateway, tmp_path)
    old = encrypt(issuer.token(), rsa_private_jwk(_RSA, "enc-rsa"))
    new = encrypt(issuer.token(), rsa_private_jwk(_NEXT, "enc-next"))
    async with http.get(url(gateway, "/api/x"), headers=bearer(old)) as resp:
        assert resp.status == 200  # and now cached
    async with http.get(url(gateway, "/api/x"), headers=bearer(new)) as resp:
        assert resp.status == 401  # not ours yet (and that refusal is cached too)
    assert gateway.decryption is not None
    before = gateway.decryption.keys
    # The Secret is updated: the old key is gone, a new one is there.
    write_keys(tmp_path, rsa_private_jwk(_NEXT, "enc-next"), ec_private_jwk(_EC, "enc-ec"))
    await wait_for(lambda: gateway.decryption is not None and gateway.decryption.keys is not before, timeout=8)
    async with http.get(url(gateway, "/api/x"), headers=bearer(new)) as resp:
        assert resp.status == 200
    async with http.get(url(gateway, "/api/x"), headers=bearer(old)) as resp:
        assert resp.status == 401  # the cached verdict went with the key
    # A broken replacement is refused; the last good keys keep serving.
    current = gateway.decryption.keys
    (tmp_path / "jwe-keys.json").write_text('{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}')
    gateway.decryption.poll()
    assert gateway.decryption.keys is current
    async with http.get(url(gateway, "/api/x"), headers=bearer(new)) as resp:
        assert resp.status == 200
    async with http.get(admin_url(gateway, "/readyz")) as resp:
        assert resp.status == 200
    async with http.get(admin_url(gateway, "/keys")) as resp:
        described = (await resp.json())["decryption"]
    assert [k["kid"] for k in described["keys"]] == ["enc-next", "enc-ec"]
    assert described["keys"][0]["algs"] == ["RSA-OAEP", "RSA-OAEP-256"]
    assert rsa_private_jwk(_NEXT, "x")["d"] not in json.dumps(described)  # no key material


async def test_a_config_reload_adds_and_removes_the_decryption_block(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    gateway = await make_gateway()
    write_keys(tmp_path, rsa_private_jwk(_RSA, "enc-rsa"))
    token = encrypt(issuer.token(), rsa_private_jwk(_RSA, "enc-rsa"))
    async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
        assert resp.status == 401
    config = tmp_path / "gateway.yaml"
    config.write_text(config.read_text() + DECRYPTION.replace("{{", "{").replace("}}", "}").replace(", ECDH-ES+A256KW", ""))
    assert await gateway.reload()
    async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
        assert resp.status == 200
    config.write_text(config.read_text().split("\ndecryption:")[0] + "\n")
    assert await gateway.reload()
    async with http.get(url(gateway, "/api/x"), headers=bearer(token)) as resp:
        assert resp.status == 401


async def test_the_decision_port_decrypts_the_same_way(
    make_gateway: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    config = WITH_DECRYPTION.replace("server:\n", 'server:\n  authz_listen: "127.0.0.1:0"\n  authz_dialect: nginx\n', 1)
    gateway = await start(make_gateway, tmp_path, config)
    inner = issuer.token(sub="dora")
    ask = {"X-Original-Method": "GET", "X-Original-URI": "/api/x"}
    check = f"http://127.0.0.1:{gateway.authz_port}/check"
    async with http.get(check, headers={**ask, **bearer(encrypt(inner, rsa_private_jwk(_RSA, "enc-rsa")))}) as resp:
        assert resp.status == 200
        assert resp.headers["X-User-Id"] == "dora"
        assert resp.headers["X-Jwt-Payload"] == inner.split(".")[1]
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with http.get(check, headers={**ask, **bearer(encrypt(inner, rsa_private_jwk(stranger, "enc-rsa")))}) as resp:
        assert resp.status == 401
        assert "could not be decrypted" in resp.headers["WWW-Authenticate"]
        assert "X-User-Id" not in resp.headers
