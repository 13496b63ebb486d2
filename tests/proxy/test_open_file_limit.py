"""The gateway lifts its soft open-file limit toward server.max_connections, never past the hard limit."""

from __future__ import annotations

import resource

from gateway.server import FD_HEADROOM, raise_open_file_limit


def test_soft_limit_is_raised_within_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_open_file_limit(2000)
        want = 2000 + FD_HEADROOM
        expected = want if hard == resource.RLIM_INFINITY else min(want, hard)
        assert got == expected == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_higher_soft_limit_is_left_alone() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        high = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (high, hard))
        assert raise_open_file_limit(high - FD_HEADROOM - 1) == high
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == high
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
