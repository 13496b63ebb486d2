"""Authentication through the verified-token cache, with the clock pinned: time claims and route rules hold on every hit."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.authn import Authenticator
from gateway.config.load import parse_config
from gateway.jose.errors import Reason, TokenError
from gateway.keystore import KeyStore
from gateway.metrics import Metrics
from gateway.runtime import Runtime, build_runtime
from gateway.token_cache import TokenCache

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = 1_800_000_000.0


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def _config_text() -> str:
    pub = KEY.public_key().public_numbers()
    jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "k", "n": _b64(pub.n), "e": _b64(pub.e)}]})
    issuer = """
  - name: {name}
    issuer: "https://{name}.example/"
    audiences: [api]
    algorithms: [RS256]
    clock_skew: 10s
    jwks: {{inline: {jwks}}}"""
    return (
        "issuers:" + issuer.format(name="one", jwks=jwks) + issuer.format(name="two", jwks=jwks) + """
routes:
  - {name: only-one, match: {prefix: /one}, issuers: [one]}
  - {name: any, match: {prefix: /}}
"""
    )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup() -> tuple[Runtime, Authenticator, Clock]:
    config = parse_config(_config_text(), source="<test>", base_dir=Path("."), environ={})
    keystore = KeyStore(config.issuers)
    await keystore.start()
    clock = Clock()
    return build_runtime(config, keystore), Authenticator(TokenCache(100, 300), Metrics(), clock), clock


def token(iss: str = "https://one.example/", **claims: object) -> str:
    body = {"iss": iss, "aud": "api", "sub": "u", "iat": int(NOW), "exp": int(NOW) + 60, **claims}
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k"})


def route(runtime: Runtime, path: str):  # type: ignore[no-untyped-def]
    found = runtime.router.match("GET", None, path)
    assert found is not None
    return found


async def test_cached_token_expires_on_time(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, clock = setup
    t = token()
    await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)
    clock.now = NOW + 65  # past exp, within the 10 s skew: still good, from the cache
    assert (await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)).claims["sub"] == "u"
    assert len(authn.cache) == 1
    clock.now = NOW + 71  # past exp + skew
    with pytest.raises(TokenError) as refused:
        await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)
    assert refused.value.reason is Reason.EXPIRED


async def test_not_yet_valid_token_is_never_cached_as_good(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, clock = setup
    t = token(nbf=int(NOW) + 30)
    with pytest.raises(TokenError) as refused:
        await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)
    assert refused.value.reason is Reason.NOT_YET_VALID
    clock.now = NOW + 25  # within skew of nbf now
    await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)


async def test_route_issuer_restriction_holds_on_a_cache_hit(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, _ = setup
    t = token(iss="https://two.example/")
    await authn.authenticate(t, route(runtime, "/x"), runtime.issuers, 8192)  # cached as issuer "two"
    with pytest.raises(TokenError) as refused:
        await authn.authenticate(t, route(runtime, "/one/x"), runtime.issuers, 8192)
    assert refused.value.reason is Reason.BAD_ISSUER


async def test_cache_is_bounded(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, _ = setup
    for i in range(150):
        await authn.authenticate(token(jti=str(i)), route(runtime, "/x"), runtime.issuers, 8192)
    assert len(authn.cache) == 100


async def test_refusals_are_remembered_but_not_for_a_new_key_set(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, _ = setup
    good = token()
    head, payload, sig = good.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    for _ in range(2):
        with pytest.raises(TokenError) as refused:
            await authn.authenticate(forged, route(runtime, "/x"), runtime.issuers, 8192)
        assert refused.value.reason is Reason.BAD_SIGNATURE
    assert authn._metrics.cache_hit._value.get() == 1  # the second refusal came from the cache
    # A key-set change of that issuer forgets its refusals: a new key might verify the token.
    keys = runtime.issuers.by_name["one"].keys.keys
    authn.cache.drop_removed_keys("one", keys, keys)
    assert len(authn.cache) == 0


async def test_refusals_that_time_can_cure_are_not_remembered(setup) -> None:  # type: ignore[no-untyped-def]
    runtime, authn, clock = setup
    early = token(nbf=int(NOW) + 300, exp=int(NOW) + 900)
    with pytest.raises(TokenError):
        await authn.authenticate(early, route(runtime, "/x"), runtime.issuers, 8192)
    assert len(authn.cache) == 0
    clock.now = NOW + 300
    assert (await authn.authenticate(early, route(runtime, "/x"), runtime.issuers, 8192)).claims["sub"] == "u"
