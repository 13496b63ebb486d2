"""Through a running gateway (cache off): checks are batched only while other requests are in progress,
and every request of a burst, good and forged tokens mixed, gets its own answer."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.server import GatewayProcess

from .conftest import BASE_CONFIG, GatewayFactory, url
from .harness import Issuer, Upstream, wait_for

NO_CACHE = BASE_CONFIG + "cache: {{max_entries: 0}}\n"  # every request is verified


async def test_other_requests_in_progress_are_what_turns_batching_on(
    make_gateway: GatewayFactory, issuer: Issuer, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    gateway: GatewayProcess = await make_gateway(NO_CACHE)
    assert not gateway._others_in_flight()  # idle
    headers = {"Authorization": f"Bearer {issuer.token()}"}
    held = [asyncio.ensure_future(http.get(url(gateway, "/slow?delay=1"), headers=headers)) for _ in range(2)]
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    await wait_for(gateway._others_in_flight)  # two requests waiting on the upstream
    for response in await asyncio.gather(*held):
        assert response.status == 200
        response.release()
    await wait_for(lambda: not gateway._others_in_flight())


async def test_a_burst_of_good_and_forged_tokens_each_get_their_own_answer(
    make_gateway: GatewayFactory, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    gateway: GatewayProcess = await make_gateway(NO_CACHE)
    tokens = []
    for i in range(60):
        token = issuer.token(sub=f"user-{i}")
        if i % 3 == 0:  # a forged one: the signature of another token
            head, payload, _ = token.split(".")
            token = f"{head}.{payload}.{issuer.token(sub='other').split('.')[2]}"
        tokens.append(token)

    async def ask(token: str) -> tuple[int, str | None]:
        async with http.get(url(gateway, "/api/orders"), headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.json() if response.status == 200 else None
            users = [] if body is None else [v for k, v in body["headers"] if k.lower() == "x-user-id"]
            return response.status, users[0] if len(users) == 1 else None

    answers = await asyncio.gather(*(ask(t) for t in tokens))
    for i, (status, user) in enumerate(answers):
        if i % 3 == 0:
            assert status == 401
        else:
            assert (status, user) == (200, f"user-{i}")
