"""Signature checks parked in one event-loop turn run back to back in one callback, each with its own verdict."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import gateway.verify_batch as verify_batch
from gateway.authn import Authenticator
from gateway.config.load import parse_config
from gateway.jose.claims import ClaimPolicy
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwk import Jwk, KeySet, parse_jwk_set
from gateway.jose.jws import ParsedToken, parse_token
from gateway.jose.verifier import VerifyPolicy
from gateway.keystore import KeyStore
from gateway.metrics import Metrics
from gateway.routing import Route
from gateway.runtime import Runtime, build_runtime
from gateway.token_cache import TokenCache
from gateway.verify_batch import VerifyBatch

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = 1_800_000_000.0
POLICY = VerifyPolicy(frozenset({"RS256"}), ClaimPolicy(issuer="https://idp/", audiences=frozenset({"api"})))


def _keys() -> KeySet:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    keys, skipped = parse_jwk_set({"keys": [{**jwk, "kid": "k"}]})
    assert not skipped
    return keys


def _token(sub: str, key: Any = KEY, kid: str = "k") -> ParsedToken:
    claims = {"iss": "https://idp/", "aud": "api", "sub": sub, "iat": int(NOW), "exp": int(NOW) + 60}
    return parse_token(jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid}))


def _recording(monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> list[str]:
    """The real verify_token, recording whose token each check was (and, for `fail_on`, breaking)."""
    seen: list[str] = []
    real = verify_batch.verify_token

    def recorded(token: ParsedToken, *args: Any) -> Jwk:
        seen.append(token.claims["sub"])
        if token.claims["sub"] == fail_on:
            raise RuntimeError("a bug in a check")
        return real(token, *args)

    monkeypatch.setattr(verify_batch, "verify_token", recorded)
    return seen


async def test_checks_of_one_turn_run_together_in_arrival_order(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    batch, keys = VerifyBatch(), _keys()
    tokens = [_token("a"), _token("b", key=OTHER), _token("c", kid="gone"), _token("d")]
    futures = [batch.verify(t, POLICY, keys, NOW) for t in tokens]
    assert not any(f.done() for f in futures)  # parked: nothing checked before the turn ends
    await asyncio.sleep(0)  # one turn: the one callback ran them all
    assert seen == ["a", "b", "c", "d"]
    outcomes = [f.result() for f in futures]
    assert isinstance(outcomes[0], Jwk) and outcomes[0].kid == "k"
    assert isinstance(outcomes[1], TokenError) and outcomes[1].reason is Reason.BAD_SIGNATURE
    assert isinstance(outcomes[2], TokenError) and outcomes[2].reason is Reason.UNKNOWN_KEY
    assert isinstance(outcomes[3], Jwk)
    # The next turn's checks are a new batch.
    later = batch.verify(_token("e"), POLICY, keys, NOW)
    await asyncio.sleep(0)
    assert seen[-1] == "e" and isinstance(later.result(), Jwk)


async def test_a_request_gone_before_its_turn_costs_no_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    batch, keys = VerifyBatch(), _keys()
    futures = [batch.verify(_token(s), POLICY, keys, NOW) for s in "abc"]
    futures[1].cancel()  # the client went away (its task was cancelled)
    await asyncio.sleep(0)
    assert seen == ["a", "c"]
    assert isinstance(futures[0].result(), Jwk) and isinstance(futures[2].result(), Jwk)


async def test_a_broken_check_fails_its_own_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _recording(monkeypatch, fail_on="b")
    batch, keys = VerifyBatch(), _keys()
    futures = [batch.verify(_token(s), POLICY, keys, NOW) for s in "abc"]
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        futures[1].result()
    assert isinstance(futures[0].result(), Jwk) and isinstance(futures[2].result(), Jwk)


def test_a_batch_left_on_a_closed_loop_does_not_hold_up_the_next_loop() -> None:
    batch, keys = VerifyBatch(), _keys()

    def park() -> None:
        batch.verify(_token("a"), POLICY, keys, NOW)
        first.stop()  # the batch's callback is queued for a turn this loop never takes

    first = asyncio.new_event_loop()
    first.call_soon(park)
    first.run_forever()
    first.close()

    async def verify() -> Any:
        return await asyncio.wait_for(batch.verify(_token("b"), POLICY, keys, NOW), 5)

    assert isinstance(asyncio.run(verify()), Jwk)


@pytest.fixture
async def issuer_and_route() -> AsyncIterator[tuple[Runtime, Route]]:
    """One issuer with KEY as "k", one route for every path: what the Authenticator needs."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    text = f"""
issuers:
  - name: one
    issuer: "https://idp/"
    audiences: [api]
    algorithms: [RS256]
    jwks: {{inline: {json.dumps({"keys": [{**jwk, "kid": "k"}]})}}}
routes:
  - {{name: any, match: {{prefix: /}}}}
"""
    config = parse_config(text, source="<test>", base_dir=Path("."), environ={})
    keystore = KeyStore(config.issuers)
    await keystore.start()
    runtime = build_runtime(config, keystore)
    route = runtime.router.match("GET", None, "/x")
    assert route is not None
    yield runtime, route
    await keystore.close()


async def test_concurrent_authentications_each_get_their_own_verdict(issuer_and_route: tuple[Runtime, Route]) -> None:
    """Through the Authenticator: requests verified in one batch, refusals and all, cache off."""
    runtime, route = issuer_and_route
    authn = Authenticator(TokenCache(0, 300), Metrics(), lambda: NOW, others_in_flight=lambda: True)
    claims = {"iss": "https://idp/", "aud": "api", "iat": int(NOW), "exp": int(NOW) + 60}
    tokens = [
        jwt.encode({**claims, "sub": f"u{i}"}, KEY if i % 3 else OTHER, algorithm="RS256", headers={"kid": "k"})
        for i in range(30)
    ]
    results = await asyncio.gather(
        *(authn.authenticate(t, route, runtime.issuers, 8192) for t in tokens), return_exceptions=True
    )
    for i, result in enumerate(results):
        if i % 3:
            assert not isinstance(result, BaseException) and result.claims["sub"] == f"u{i}"
        else:
            assert isinstance(result, TokenError) and result.reason is Reason.BAD_SIGNATURE


async def test_a_request_alone_is_checked_at_once(
    monkeypatch: pytest.MonkeyPatch, issuer_and_route: tuple[Runtime, Route]
) -> None:
    """With no other request in progress the check runs inline: parking it would only add a loop turn."""
    runtime, route = issuer_and_route

    def no_parking(*_: Any) -> Any:
        raise AssertionError("a lone request's check was parked")

    monkeypatch.setattr(VerifyBatch, "verify", no_parking)
    authn = Authenticator(TokenCache(0, 300), Metrics(), lambda: NOW, others_in_flight=lambda: False)
    claims = {"iss": "https://idp/", "aud": "api", "sub": "u", "iat": int(NOW), "exp": int(NOW) + 60}
    good = jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k"})
    forged = jwt.encode(claims, OTHER, algorithm="RS256", headers={"kid": "k"})
    assert (await authn.authenticate(good, route, runtime.issuers, 8192)).claims["sub"] == "u"
    with pytest.raises(TokenError) as refused:
        await authn.authenticate(forged, route, runtime.issuers, 8192)
    assert refused.value.reason is Reason.BAD_SIGNATURE
    busy = Authenticator(TokenCache(0, 300), Metrics(), lambda: NOW, others_in_flight=lambda: True)
    with pytest.raises(AssertionError, match="parked"):
        await busy.authenticate(good, route, runtime.issuers, 8192)


async def test_a_flood_is_checked_a_batch_per_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """More than MAX_BATCH checks parked at once: the event loop gets a turn between batches."""
    seen = _recording(monkeypatch)
    batch, keys = VerifyBatch(), _keys()
    parsed = _token("a")
    futures = [batch.verify(parsed, POLICY, keys, NOW) for _ in range(verify_batch.MAX_BATCH + 10)]
    await asyncio.sleep(0)
    assert len(seen) == verify_batch.MAX_BATCH  # one batch in this turn
    assert sum(f.done() for f in futures) == verify_batch.MAX_BATCH
    late = batch.verify(parsed, POLICY, keys, NOW)  # parked while the rest waits: joins it
    await asyncio.sleep(0)
    assert len(seen) == verify_batch.MAX_BATCH + 11
    assert all(isinstance(f.result(), Jwk) for f in [*futures, late])
