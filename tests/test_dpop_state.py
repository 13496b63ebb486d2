"""DPoP shared state: the replay memory (also across a fork, as workers use it) and the server nonces."""

from __future__ import annotations

import os

from gateway.dpop_state import SLOTS_PER_BUCKET, Nonce, Nonces, Replay, ReplayStore

NOW = 1_700_000_000.0


def test_a_proof_is_fresh_once_then_replayed_until_its_window_ends() -> None:
    store = ReplayStore(slots=1024)
    assert store.check_and_add("jkt", "jti-1", until=NOW + 90, now=NOW) is Replay.FRESH
    assert store.check_and_add("jkt", "jti-1", until=NOW + 90, now=NOW + 89) is Replay.REPLAYED
    # Same jti under another key is another proof (RFC 9449 §11.1: jti per key).
    assert store.check_and_add("other-jkt", "jti-1", until=NOW + 90, now=NOW) is Replay.FRESH
    # Once the window is over the slot is free again (the proof's iat check refuses it anyway).
    assert store.check_and_add("jkt", "jti-1", until=NOW + 200, now=NOW + 92) is Replay.FRESH


def test_a_full_bucket_refuses_instead_of_forgetting() -> None:
    store = ReplayStore(slots=SLOTS_PER_BUCKET)  # one bucket
    for i in range(SLOTS_PER_BUCKET):
        assert store.check_and_add("jkt", f"jti-{i}", until=NOW + 90, now=NOW) is Replay.FRESH
    assert store.check_and_add("jkt", "one-more", until=NOW + 90, now=NOW) is Replay.FULL
    for i in range(SLOTS_PER_BUCKET):  # nothing was evicted to make room
        assert store.check_and_add("jkt", f"jti-{i}", until=NOW + 90, now=NOW) is Replay.REPLAYED
    assert store.check_and_add("jkt", "one-more", until=NOW + 200, now=NOW + 100) is Replay.FRESH


def test_a_proof_seen_by_a_forked_worker_is_a_replay_in_its_sibling() -> None:
    store = ReplayStore(slots=4096)
    store.share_with_forks()
    pid = os.fork()
    if pid == 0:  # the "other worker"
        code = 0 if store.check_and_add("jkt", "from-child", until=NOW + 90, now=NOW) is Replay.FRESH else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.check_and_add("jkt", "from-child", until=NOW + 90, now=NOW) is Replay.REPLAYED
    assert store.check_and_add("jkt", "from-parent", until=NOW + 90, now=NOW) is Replay.FRESH


def test_nonces_rotate_each_period_and_the_previous_one_still_counts() -> None:
    clock = [NOW]
    nonces = Nonces(b"k" * 32, lambda: clock[0])
    first = nonces.current(60)
    assert nonces.check(first, 60) is Nonce.CURRENT
    clock[0] += 60
    second = nonces.current(60)
    assert second != first
    assert nonces.check(first, 60) is Nonce.PREVIOUS
    assert nonces.check(second, 60) is Nonce.CURRENT
    clock[0] += 60
    assert nonces.check(first, 60) is Nonce.INVALID  # two periods old


def test_nonces_are_bound_to_the_key_and_the_period() -> None:
    clock = [NOW]
    nonce = Nonces(b"k" * 32, lambda: clock[0]).current(60)
    assert Nonces(b"x" * 32, lambda: clock[0]).check(nonce, 60) is Nonce.INVALID
    assert Nonces(b"k" * 32, lambda: clock[0]).check(nonce, 30) is Nonce.INVALID
    # The last character carries 4 padding bits: a spelling that decodes alike is refused too.
    last = nonce[-1]
    twin = nonce[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last) ^ 1)
    ]
    assert Nonces(b"k" * 32, lambda: clock[0]).check(twin, 60) is Nonce.INVALID
    for bad in (None, "", "x" * 30, nonce[:10] + ("A" if nonce[10] != "A" else "B") + nonce[11:], "é" * 30):
        assert Nonces(b"k" * 32, lambda: clock[0]).check(bad, 60) is Nonce.INVALID
