"""Secrets named in the document, `{env: VAR}` or `{file: PATH}`, never inline: read at load into a `Secret`.

Messages here never quote a value: a mistaken inline one may be the secret itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.config.model import Secret
from gateway.config.reader import At, Reader, kind
from gateway.config.yaml_lines import MarkedMap

MAX_SECRET_FILE_BYTES = 64 * 1024
_SECRET_KEYS = ("env", "file")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret lives: an environment variable's name, or a file (path resolved)."""

    kind: Literal["env", "file"]
    name: str  # the variable's name, or the absolute file path
    at: At  # the located `env:` / `file:` value, for messages


def locate_secret(r: Reader, at: At) -> SecretSource | None:
    """The one source `{env: VAR}` or `{file: PATH}` names; never an inline value."""
    if not isinstance(at.value, MarkedMap):
        r.error(at, "secrets are never inline: use {env: VAR} or {file: PATH}")
        return None
    m = r.mapping(at, _SECRET_KEYS)
    if m is None:
        return None
    given = [k for k in _SECRET_KEYS if k in m]
    if len(given) != 1:
        r.error(m[given[1]] if given else at, "give exactly one of env, file")
        return None
    src = m[given[0]]
    if not isinstance(src.value, str) or not src.value:
        r.error(src, f"must be a non-empty string, got {kind(src.value)}")
        return None
    if given[0] == "env":
        if _ENV_NAME.fullmatch(src.value) is None:
            r.error(src, "is not an environment variable name (letters, digits, '_'; not starting with a digit)")
            return None
        return SecretSource("env", src.value, src)
    return SecretSource("file", str(r.resolve(src.value)), src)


def secret_bytes(r: Reader, source: SecretSource, *, what: str = "secret file", limit: int = MAX_SECRET_FILE_BYTES) -> bytes | None:
    """The raw bytes at `source` (a file's one trailing newline dropped); None, reported, when unusable."""
    src = source.at
    if source.kind == "env":
        text = r.environ.get(source.name)
        if text is None:
            r.error(src, f"environment variable {source.name} is not set")
            return None
        if not text:
            r.error(src, f"environment variable {source.name} is empty")
            return None
        return text.encode("utf-8", "surrogateescape")
    raw = r.read_file(src, Path(source.name), what=what, limit=limit)
    if raw is None:
        return None
    if raw.endswith(b"\n"):
        raw = raw[:-1]  # editors add one; SPEC: "a file's one trailing newline dropped"
    if not raw:
        r.error(src, f"{what} {source.name} is empty")
        return None
    return raw


def read_secret(r: Reader, at: At, min_bytes: int) -> Secret | None:
    """The secret's raw bytes (a file's one trailing newline dropped), at least `min_bytes` long."""
    source = locate_secret(r, at)
    raw = None if source is None else secret_bytes(r, source)
    if source is None or raw is None:
        return None
    if len(raw) < min_bytes:
        r.error(
            source.at,
            f"secret is shorter than {min_bytes} bytes, the minimum for the configured HS algorithm "
            "(RFC 7518 §3.2: at least the hash size)",
        )
        return None
    return Secret(raw)
