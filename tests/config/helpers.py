"""Shared helpers for the config tests: parse a snippet and locate its marked line."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.config.errors import ConfigInvalid, ConfigIssue
from gateway.config.load import parse_config
from gateway.config.model import GatewayConfig

MARK = "# <-"

# A minimal valid issuer, for cases that need one; the `uri` source needs no I/O at load.
ISSUER = """\
issuers:
  - name: corp
    issuer: "https://idp.example.com/"
    algorithms: [RS256]
    jwks: {uri: "https://idp.example.com/jwks.json"}
"""


def doc(text: str) -> str:
    return textwrap.dedent(text)


def marked_line(text: str) -> int:
    """The 1-based line holding the `# <-` marker."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if MARK in line]
    assert len(lines) == 1, "exactly one marker per case"
    return lines[0]


def parse(text: str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> GatewayConfig:
    return parse_config(text, source="t.yaml", base_dir=base_dir or Path("/nonexistent"), environ=environ or {})


def issues(text: str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> tuple[ConfigIssue, ...]:
    with pytest.raises(ConfigInvalid) as info:
        parse(text, environ=environ, base_dir=base_dir)
    return info.value.issues


def only_issue(text: str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> ConfigIssue:
    found = issues(text, environ=environ, base_dir=base_dir)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]
