"""Tests for gateway.keystore: the key lifecycle against a real JWKS server on 127.0.0.1.

Nothing here sleeps to wait for behaviour: tests wait on recorded events, and
the rate limit is driven by a pinned clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.jose.jwk import KeySet
from gateway.jwks_fetch import MAX_DOCUMENT_BYTES, FetchResult
from gateway.keystore import KeyEvents, KeyStore
from gateway.process_log import JsonFormatter

from .conftest import MakeStore
from .helpers import ISSUER, FakeClock, JwksServer, KeySets, RecordingEvents, issuer_config, kids, kids_of, oct_jwk

HS_SECRET = b"s" * 32


async def _ready(store: KeyStore, events: RecordingEvents, name: str = "corp") -> None:
    await events.wait_for(lambda: store.get(name).ready)


# -- start and readiness --------------------------------------------------------------


async def test_start_does_not_wait_for_a_slow_idp(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    server.delay = 30  # released at teardown
    store = make_store([issuer_config(server.jwks_url, timeout=10)])
    async with asyncio.timeout(1):
        await store.start()
    assert store.missing() == ["corp"]
    assert store.get("corp").keys is None


async def test_down_at_start_then_recovers_without_restart(
    key_sets: KeySets, make_store: MakeStore, events: RecordingEvents
) -> None:
    srv = JwksServer(jwks=key_sets.a)  # not listening yet: connections refused
    try:
        # refresh_interval caps the backoff, so retries come every ~0.1s here.
        store = make_store([issuer_config(srv.jwks_url, refresh_interval=0.1)])
        await store.start()
        assert store.missing() == ["corp"]
        await events.wait_for(lambda: events.results().count("unreachable") >= 2)
        assert store.missing() == ["corp"]
        await srv.up()
        await _ready(store, events)
        assert store.missing() == []
        assert kids(store.get("corp").keys) == kids_of(key_sets.a)
    finally:
        await srv.cleanup()


async def test_down_after_start_keeps_keys(server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(server.jwks_url, refresh_interval=0.05)])
    await store.start()
    await _ready(store, events)
    before = store.get("corp").keys
    await server.down()
    seen = len(events.results())
    await events.wait_for(lambda: events.results()[seen:].count("unreachable") >= 3)
    assert store.get("corp").keys is before
    assert store.missing() == []


@pytest.mark.parametrize(
    ("setup", "result"),
    [
        ({"raw": b"<html>SECRET-BODY</html>"}, "invalid"),
        ({"raw": b"[1, 2]"}, "invalid"),
        ({"raw": b'{"no_keys": true}'}, "invalid"),
        ({"raw": b'{"keys": [' + b" " * MAX_DOCUMENT_BYTES + b"]}"}, "too_large"),
        ({"raw": b'{"keys": [' + b" " * MAX_DOCUMENT_BYTES + b"]}", "chunked": True}, "too_large"),
        ({"delay": 30.0}, "timeout"),
        ({"status": 500}, "http_error"),
        ({"status": 404}, "http_error"),
        ({"jwks": {"keys": []}}, "empty"),
        ({"jwks": {"keys": [oct_jwk("o"), {"kty": "RSA", "kid": "bad", "n": "AQAB", "e": "AQAB"}]}}, "empty"),
    ],
    ids=["garbage", "array", "not-a-set", "oversize", "oversize-chunked", "slow", "500", "404", "empty", "all-invalid"],
)
async def test_failures_keep_the_last_good_set(
    server: JwksServer,
    make_store: MakeStore,
    events: RecordingEvents,
    caplog: pytest.LogCaptureFixture,
    setup: dict[str, Any],
    result: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.keys")
    store = make_store([issuer_config(server.jwks_url, refresh_interval=0.05, timeout=0.2)])
    await store.start()
    await _ready(store, events)
    good = store.get("corp").keys
    for name, value in setup.items():
        setattr(server, name, value)
    seen = len(events.results())
    await events.wait_for(lambda: events.results()[seen:].count(result) >= 2)
    assert store.get("corp").keys is good
    assert store.missing() == []
    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    assert "SECRET" not in json.dumps(lines)
    assert any(line.get("result") == result for line in lines if line["msg"] == "jwks refresh failed")


async def test_backoff_doubles_and_is_capped(server: JwksServer, make_store: MakeStore) -> None:
    store = make_store([issuer_config(server.jwks_url, refresh_interval=600)])
    issuer = store.get("corp")
    delays = []
    for failures in range(1, 10):
        issuer._failures = failures
        delays.append(issuer._next_delay(FetchResult.UNREACHABLE))
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    short = make_store([issuer_config(server.jwks_url, refresh_interval=5)]).get("corp")
    short._failures = 10
    assert short._next_delay(FetchResult.TIMEOUT) == 5


@pytest.mark.parametrize(("min_refresh", "expected"), [(30, [150, 300, 600, 600, 600]), (200, [200, 400, 600, 600, 600])])
async def test_backoff_while_serving_a_stale_set_starts_at_a_quarter_interval_and_caps_at_it(
    server: JwksServer, make_store: MakeStore, events: RecordingEvents, min_refresh: float, expected: list[float]
) -> None:
    # An IdP outage must not turn a fleet's one request per refresh_interval into one a minute.
    store = make_store([issuer_config(server.jwks_url, refresh_interval=600, min_refresh_interval=min_refresh)])
    await store.start()
    await _ready(store, events)
    issuer = store.get("corp")
    delays = []
    for failures in range(1, 6):
        issuer._failures = failures
        delays.append(issuer._next_delay(FetchResult.UNREACHABLE))
    assert delays == expected


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.01), (0.5, 300.0), (1.0, 600.0)])
async def test_first_refresh_takes_a_random_phase_within_the_interval(
    server: JwksServer, make_store: MakeStore, draw: float, expected: float
) -> None:
    # A fleet started at once spreads its refreshes over the whole interval, not a ±10% band.
    issuer = make_store([issuer_config(server.jwks_url, refresh_interval=600)], random=lambda: draw).get("corp")
    assert issuer._next_delay(FetchResult.OK, first=True) == pytest.approx(expected)
    assert issuer._next_delay(FetchResult.OK) == pytest.approx(600 * (0.9 + 0.2 * draw))


async def test_the_refresh_loop_draws_the_phase_once(
    server: JwksServer, make_store: MakeStore, events: RecordingEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store([issuer_config(server.jwks_url, refresh_interval=0.02, min_refresh_interval=0.02)])
    issuer = store.get("corp")
    calls: list[tuple[str, bool]] = []
    real = issuer._next_delay

    def recording(result: FetchResult, *, first: bool = False) -> float:
        calls.append((str(result), first))
        return real(result, first=first)

    monkeypatch.setattr(issuer, "_next_delay", recording)
    await store.start()
    await events.wait_for(lambda: len(events.results()) >= 3)
    assert calls[0] == ("ok", True)
    assert all(not first for _, first in calls[1:])


@pytest.mark.parametrize(
    ("max_age", "expected"), [(None, 600.0), (120.0, 120.0), (5.0, 30.0), (10**6, 600.0)], ids=["none", "inside", "below-min", "above-max"]
)
async def test_refresh_interval_follows_max_age_clamped(
    server: JwksServer, make_store: MakeStore, max_age: float | None, expected: float
) -> None:
    issuer = make_store([issuer_config(server.jwks_url, refresh_interval=600, min_refresh_interval=30)]).get("corp")
    issuer._max_age = max_age
    assert issuer._next_delay(FetchResult.OK) == expected


async def test_jitter_is_ten_percent(server: JwksServer, make_store: MakeStore) -> None:
    cfg = [issuer_config(server.jwks_url, refresh_interval=100)]
    low = make_store(cfg, random=lambda: 0.0).get("corp")
    high = make_store(cfg, random=lambda: 1.0).get("corp")
    assert low._next_delay(FetchResult.OK) == pytest.approx(90)
    assert high._next_delay(FetchResult.OK) == pytest.approx(110)


async def test_cache_control_max_age_drives_the_refresh(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    # refresh_interval alone would mean one fetch per 10 minutes; max-age=0 clamps to min_refresh_interval.
    server.cache_control = "max-age=0"
    store = make_store([issuer_config(server.jwks_url, refresh_interval=600, min_refresh_interval=0.02)])
    await store.start()
    await events.wait_for(lambda: events.results().count("ok") >= 3)
    assert server.hits() >= 3


# -- unknown kid: rotation, single flight, rate limit ---------------------------------


async def test_rotation_new_kid_after_refetch_and_listener_sees_old_and_new(
    server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents
) -> None:
    store = make_store([issuer_config(server.jwks_url)])
    await store.start()
    await _ready(store, events)
    issuer = store.get("corp")
    changes: list[tuple[KeySet | None, KeySet]] = []
    issuer.add_listener(lambda old, new: changes.append((old, new)))
    old = issuer.keys
    server.jwks = {"keys": key_sets.a["keys"] + key_sets.b["keys"]}
    new = await issuer.refetch_unknown_kid()
    assert new is issuer.keys
    assert "b-rsa" in kids(new)
    assert changes == [(old, new)]


async def test_refetch_is_single_flight(server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(server.jwks_url)])
    await store.start()
    await _ready(store, events)
    server.jwks = key_sets.b
    before = server.hits()
    results = await asyncio.gather(*(store.get("corp").refetch_unknown_kid() for _ in range(100)))
    assert server.hits() - before == 1
    assert all(r is results[0] for r in results)
    assert kids(results[0]) == kids_of(key_sets.b)


async def test_refetch_is_rate_limited_by_min_refresh_interval(
    server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents, clock: FakeClock
) -> None:
    store = make_store([issuer_config(server.jwks_url, min_refresh_interval=30)])
    await store.start()
    await _ready(store, events)
    issuer = store.get("corp")
    await issuer.refetch_unknown_kid()
    hits = server.hits()
    server.jwks = key_sets.b
    clock.advance(29)
    assert kids(await issuer.refetch_unknown_kid()) == kids_of(key_sets.a)  # limited: current set, at once
    assert server.hits() == hits
    clock.advance(1)
    assert kids(await issuer.refetch_unknown_kid()) == kids_of(key_sets.b)
    assert server.hits() == hits + 1


async def test_refetch_survives_a_cancelled_caller(server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(server.jwks_url)])
    await store.start()
    await _ready(store, events)
    issuer = store.get("corp")
    server.jwks = key_sets.b
    server.delay = 0.2
    first = asyncio.create_task(issuer.refetch_unknown_kid())
    second = asyncio.create_task(issuer.refetch_unknown_kid())
    await asyncio.sleep(0)  # let both join the one fetch
    first.cancel()  # e.g. the client went away
    assert kids(await second) == kids_of(key_sets.b)


async def test_304_keeps_the_set_and_sends_validators(
    server: JwksServer, make_store: MakeStore, events: RecordingEvents
) -> None:
    server.etag = '"v1"'
    server.last_modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    store = make_store([issuer_config(server.jwks_url)])
    await store.start()
    await _ready(store, events)
    issuer = store.get("corp")
    changes: list[object] = []
    issuer.add_listener(lambda old, new: changes.append(new))
    before = issuer.keys
    assert await issuer.refetch_unknown_kid() is before
    assert server.seen[-1].headers.get("If-None-Match") == '"v1"'
    assert server.seen[-1].headers.get("If-Modified-Since") == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert events.results() == ["ok", "not_modified"]
    assert changes == []


async def test_rejected_document_is_not_cached_by_validators(
    server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents, clock: FakeClock
) -> None:
    # An ETag on a set we refused must not later turn into "304: your keys are current".
    server.etag = '"bad"'
    server.jwks = {"keys": []}
    store = make_store([issuer_config(server.jwks_url, min_refresh_interval=1)])
    await store.start()
    await events.wait_result("empty")
    await store.get("corp").refetch_unknown_kid()
    assert "If-None-Match" not in server.seen[-1].headers


# -- discovery and transport policy ---------------------------------------------------


async def test_discovery_ok(server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    server.discovery = {"issuer": ISSUER, "jwks_uri": server.jwks_url}
    store = make_store([issuer_config(server.base + "/", kind="discovery")])
    await store.start()
    await _ready(store, events)
    assert kids(store.get("corp").keys) == kids_of(key_sets.a)


async def test_discovery_issuer_mismatch_refused(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    server.discovery = {"issuer": "https://attacker.test/", "jwks_uri": server.jwks_url}
    store = make_store([issuer_config(server.base, kind="discovery", refresh_interval=0.05)])
    await store.start()
    await events.wait_for(lambda: events.results().count("issuer_mismatch") >= 2)
    assert store.missing() == ["corp"]
    assert server.hits("/jwks.json") == 0


async def test_plain_http_refused_without_allow_http(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(server.jwks_url, allow_http=False)])
    await store.start()
    await events.wait_result("refused")
    assert store.missing() == ["corp"]
    assert server.seen == []


# -- local sources ------------------------------------------------------------------------


def _write(path: Path, doc: object) -> None:
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


async def test_file_source_ready_at_start_and_reloaded_on_change(
    tmp_path: Path, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents
) -> None:
    path = tmp_path / "jwks.json"
    _write(path, key_sets.a)
    store = make_store([issuer_config(str(path), kind="file")])
    await store.start()
    assert store.missing() == []  # read synchronously at start
    issuer = store.get("corp")
    changes: list[tuple[KeySet | None, KeySet]] = []
    issuer.add_listener(lambda old, new: changes.append((old, new)))
    first = issuer.keys
    _write(path, key_sets.b)
    await events.wait_for(lambda: kids(issuer.keys) == kids_of(key_sets.b))
    assert changes == [(first, issuer.keys)]
    good = issuer.keys
    path.write_text("{ not json")
    await events.wait_result("invalid")
    assert issuer.keys is good


async def test_file_source_configmap_symlink_swap(tmp_path: Path, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    # The kubelet layout: jwks.json -> ..data/jwks.json, ..data -> ..<timestamp>/,
    # and an update atomically renames a new ..data link over the old one.
    def version(name: str, doc: object) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "jwks.json").write_text(json.dumps(doc))

    version("..2024_01", key_sets.a)
    os.symlink("..2024_01", tmp_path / "..data")
    os.symlink("..data/jwks.json", tmp_path / "jwks.json")
    store = make_store([issuer_config(str(tmp_path / "jwks.json"), kind="file")])
    await store.start()
    issuer = store.get("corp")
    assert kids(issuer.keys) == kids_of(key_sets.a)
    version("..2024_02", key_sets.b)
    os.symlink("..2024_02", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    await events.wait_for(lambda: kids(issuer.keys) == kids_of(key_sets.b))


async def test_file_missing_at_start_then_appears(tmp_path: Path, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    path = tmp_path / "jwks.json"
    store = make_store([issuer_config(str(path), kind="file")])
    await store.start()
    assert store.missing() == ["corp"]
    assert events.results() == ["io_error"]
    _write(path, key_sets.a)
    await _ready(store, events)


async def test_refetch_on_file_source_rereads_a_changed_file(
    tmp_path: Path, key_sets: KeySets, make_store: MakeStore
) -> None:
    path = tmp_path / "jwks.json"
    _write(path, key_sets.a)
    store = make_store([issuer_config(str(path), kind="file")], file_poll_interval=3600)
    await store.start()
    _write(path, key_sets.b)
    assert kids(await store.get("corp").refetch_unknown_kid()) == kids_of(key_sets.b)


async def test_inline_set(key_sets: KeySets, make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(None, kind="inline", inline=key_sets.a)])
    await store.start()
    assert store.missing() == []
    assert kids(store.get("corp").keys) == kids_of(key_sets.a)
    assert events.loaded == [("corp", 2)]


async def test_hs_secret_merged_with_the_set(key_sets: KeySets, make_store: MakeStore) -> None:
    store = make_store([issuer_config(None, kind="inline", inline=key_sets.a, secret=HS_SECRET)])
    await store.start()
    keys = store.get("corp").keys
    assert keys is not None
    assert sorted(k.kty for k in keys.keys) == ["EC", "RSA", "oct"]


async def test_hs_secret_only_is_ready_at_once(make_store: MakeStore) -> None:
    store = make_store([issuer_config(None, kind="none", secret=HS_SECRET, algorithms=("HS256",))])
    assert store.missing() == []
    keys = store.get("corp").keys
    assert keys is not None and [k.kty for k in keys.keys] == ["oct"]


async def test_unusable_secret_leaves_the_issuer_unready(make_store: MakeStore) -> None:
    store = make_store([issuer_config(None, kind="none", secret=b"short", algorithms=("HS256",))])
    assert store.missing() == ["corp"]


async def test_oct_keys_in_a_set_are_skipped_with_a_message(
    key_sets: KeySets, make_store: MakeStore, events: RecordingEvents, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.keys")
    doc = {"keys": [oct_jwk("sym"), *key_sets.c["keys"]]}
    store = make_store([issuer_config(None, kind="inline", inline=doc, secret=None)])
    await store.start()
    assert kids(store.get("corp").keys) == {"c-ec"}
    assert len(events.skipped) == 1
    issuer, message = events.skipped[0]
    assert issuer == "corp" and "oct" in message
    assert [getattr(r, "error", None) for r in caplog.records if r.msg == "jwks key skipped"] == [message]


async def test_a_set_of_only_oct_keys_is_empty(make_store: MakeStore, events: RecordingEvents) -> None:
    store = make_store([issuer_config(None, kind="inline", inline={"keys": [oct_jwk("sym")]})])
    await store.start()
    assert events.results() == ["empty"]
    assert store.missing() == ["corp"]


# -- store lifecycle --------------------------------------------------------------------


async def test_missing_names_only_issuers_without_keys(
    server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents
) -> None:
    store = make_store(
        [
            issuer_config(None, kind="inline", inline=key_sets.a, name="local"),
            issuer_config("http://127.0.0.1:1/jwks.json", name="down"),
            issuer_config(server.jwks_url, name="remote"),
        ]
    )
    await store.start()
    await _ready(store, events, "remote")
    assert store.missing() == ["down"]
    with pytest.raises(KeyError):
        store.get("nope")


async def test_adopt_keeps_unchanged_issuers_ready_across_reload(
    server: JwksServer, key_sets: KeySets, make_store: MakeStore, events: RecordingEvents
) -> None:
    corp = issuer_config(server.jwks_url, name="corp")
    other = issuer_config(server.jwks_url, name="other")
    old = make_store([corp, other])
    await old.start()
    await _ready(old, events, "corp")
    await _ready(old, events, "other")
    hits = server.hits()
    moved = issuer_config(server.jwks_url + "?v=2", name="other")  # source changed: must refetch
    corp_retimed = issuer_config(server.jwks_url, name="corp", refresh_interval=300)  # same source
    new = make_store([corp_retimed, moved], adopt_from=old)
    assert new.missing() == ["other"]
    assert new.get("corp").keys is old.get("corp").keys
    await new.start()
    await old.close()
    await _ready(new, events, "other")
    assert server.hits() == hits + 1  # only the changed issuer fetched


async def test_close_cancels_tasks_and_closes_its_session(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    sessions: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    store = make_store([issuer_config(server.jwks_url)], session_factory=factory)
    await store.start()
    await _ready(store, events)
    await store.close()
    assert len(sessions) == 1 and sessions[0].closed
    assert store._tasks == set()


async def test_a_given_session_is_not_closed(server: JwksServer, make_store: MakeStore, events: RecordingEvents) -> None:
    async with aiohttp.ClientSession() as session:
        store = make_store([issuer_config(server.jwks_url)], session=session)
        await store.start()
        await _ready(store, events)
        await store.close()
        assert not session.closed


async def test_broken_observers_do_not_break_loading(key_sets: KeySets, make_store: MakeStore) -> None:
    class Broken(KeyEvents):
        def keys_loaded(self, issuer: str, count: int) -> None:
            raise RuntimeError("observer bug")

    store = make_store([issuer_config(None, kind="inline", inline=key_sets.a)], events=Broken())
    def failing_listener(old: KeySet | None, new: KeySet) -> None:
        raise RuntimeError("listener bug")

    store.get("corp").add_listener(failing_listener)
    await store.start()
    assert store.missing() == []
