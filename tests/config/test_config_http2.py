"""server.http2: HTTP/2 on the proxy port."""

from __future__ import annotations

import pytest

from tests.config.helpers import doc, marked_line, only_issue, parse


def test_http2_keys_parse() -> None:
    cfg = parse(doc("""\
        server:
          http2: true
        """))
    assert cfg.server.http2 is True


def test_http2_defaults_are_off() -> None:
    cfg = parse("server: {}\n")
    assert cfg.server.http2 is False


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ("server:\n  http2: yes please  # <-\n", "server.http2", "true or false"),
    ],
    ids=["http2-not-bool"],
)
def test_bad_http2_keys_are_refused_with_key_and_line(text: str, path: str, needle: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == marked_line(text)
    assert needle in issue.message
