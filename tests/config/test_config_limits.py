"""server.header_timeout / idle_timeout / send_timeout / body_timeout / max_connections / max_inflight: the proxy port's connection limits."""

from __future__ import annotations

import pytest

from tests.config.helpers import doc, marked_line, only_issue, parse


def test_limit_keys_parse() -> None:
    cfg = parse(doc("""\
        server:
          header_timeout: 2s
          idle_timeout: 90s
          send_timeout: 30s
          body_timeout: 1500ms
          max_connections: 500
          max_inflight: 64
        """))
    server = cfg.server
    assert (server.header_timeout, server.idle_timeout, server.max_connections, server.max_inflight) == (2.0, 90.0, 500, 64)
    assert (server.send_timeout, server.body_timeout) == (30.0, 1.5)


def test_limit_defaults_follow_the_spec() -> None:
    server = parse("server: {}\n").server
    assert (server.header_timeout, server.idle_timeout, server.max_connections, server.max_inflight) == (10.0, 60.0, 10000, 0)
    assert (server.send_timeout, server.body_timeout) == (60.0, 60.0)  # nginx's send_timeout, client_body_timeout


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ("server:\n  header_timeout: 0s  # <-\n", "server.header_timeout", ""),
        ("server:\n  idle_timeout: 60  # <-\n", "server.idle_timeout", "no unit"),
        ("server:\n  send_timeout: 0s  # <-\n", "server.send_timeout", "greater than 0"),
        ("server:\n  body_timeout: 10  # <-\n", "server.body_timeout", "no unit"),
        ("server:\n  body_timeout: soon  # <-\n", "server.body_timeout", ""),
        ("server:\n  max_connections: 0  # <-\n", "server.max_connections", "between 1 and"),
        ("server:\n  max_inflight: -1  # <-\n", "server.max_inflight", "between 0 and"),
        ("server:\n  max_inflight: true  # <-\n", "server.max_inflight", "must be an integer"),
    ],
    ids=["zero-head-timeout", "bare-number", "zero-send-timeout", "bare-body-timeout", "bad-body-timeout", "no-connections", "negative-inflight", "bool-inflight"],
)
def test_bad_limits_are_refused_with_key_and_line(text: str, path: str, needle: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == marked_line(text)
    assert needle in issue.message
