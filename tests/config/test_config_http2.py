"""server.http2 and upstream.protocol: HTTP/2 on the proxy port and to the upstream."""

from __future__ import annotations

import pytest

from tests.config.helpers import doc, marked_line, only_issue, parse


def test_http2_keys_parse() -> None:
    cfg = parse(doc("""\
        server:
          http2: true
        upstream:
          url: "http://127.0.0.1:50051"
          protocol: h2c
        """))
    assert cfg.server.http2 is True
    assert cfg.upstream.protocol == "h2c"


def test_http2_defaults_are_off() -> None:
    cfg = parse("server: {}\n")
    assert cfg.server.http2 is False
    assert cfg.upstream.protocol == "http1"


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ("server:\n  http2: yes please  # <-\n", "server.http2", "true or false"),
        ('upstream:\n  url: "http://127.0.0.1:1"\n  protocol: h2  # <-\n', "upstream.protocol", "h2c"),
        ('upstream:\n  url: "https://app.internal"\n  protocol: h2c  # <-\n', "upstream.protocol", "http://"),
    ],
    ids=["http2-not-bool", "unknown-protocol", "h2c-over-https"],
)
def test_bad_http2_keys_are_refused_with_key_and_line(text: str, path: str, needle: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == marked_line(text)
    assert needle in issue.message
