"""server.log_level: default info, the four levels, anything else refused with its line."""

from __future__ import annotations

import pytest

from tests.config.helpers import doc, issues, parse


def test_default_is_info() -> None:
    assert parse("").server.log_level == "info"


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_levels(level: str) -> None:
    assert parse(f"server:\n  log_level: {level}\n").server.log_level == level


def test_unknown_level_is_refused_with_a_hint() -> None:
    [issue] = issues(doc("server:\n  log_level: DEBUG\n"))
    assert (issue.path, issue.line) == ("server.log_level", 2)
    assert "did you mean 'debug'?" in issue.message
