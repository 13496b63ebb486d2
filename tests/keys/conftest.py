"""Fixtures for the key-lifecycle tests: session-wide keys, a JWKS server per test, a store factory that closes what it builds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import pytest

from gateway.config.model import IssuerConfig
from gateway.keystore import KeyStore

from .helpers import FakeClock, JwksServer, KeySets, RecordingEvents, make_key_sets

MakeStore = Callable[..., KeyStore]


@pytest.fixture(scope="session")
def key_sets() -> KeySets:
    return make_key_sets()


@pytest.fixture
async def server(key_sets: KeySets) -> AsyncIterator[JwksServer]:
    srv = JwksServer(jwks=key_sets.a)
    await srv.up()
    yield srv
    await srv.cleanup()


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _session() -> aiohttp.ClientSession:
    # force_close: "server down" must mean refused connections, not a kept-alive
    # socket to a listener that has already stopped.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


@pytest.fixture
async def make_store(events: RecordingEvents, clock: FakeClock) -> AsyncIterator[MakeStore]:
    built: list[KeyStore] = []

    def make(issuers: Sequence[IssuerConfig], **kwargs: Any) -> KeyStore:
        kwargs.setdefault("events", events)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("random", lambda: 0.5)  # no jitter: delays are exact
        kwargs.setdefault("session_factory", _session)
        kwargs.setdefault("file_poll_interval", 0.02)
        store = KeyStore(issuers, **kwargs)
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()
