"""Configuration problems: one located issue per mistake, and the exception that carries them all.

An issue names the file, the line, the key path and what is wrong, in a sentence
that is safe to print: it never holds a secret value (STYLE principle 11).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One configuration error; `str()` is `FILE:LINE: PATH: MESSAGE`."""

    path: str  # key path, e.g. "issuers[0].jwks.uri"; "" for the whole document
    line: int | None  # 1-based; None when the problem has no place in the file
    message: str
    source: str | None = None  # the config file as the user named it

    def as_dict(self) -> dict[str, str | int | None]:
        """The issue as structured log fields."""
        return {"file": self.source, "line": self.line, "path": self.path, "error": self.message}

    def __str__(self) -> str:
        where = self.source or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


def sort_issues(issues: Iterable[ConfigIssue]) -> tuple[ConfigIssue, ...]:
    """File order: issues without a line first, then by line; ties keep discovery order."""
    return tuple(sorted(issues, key=lambda i: -1 if i.line is None else i.line))


class ConfigInvalid(Exception):
    """The configuration was refused; `issues` lists every problem found, sorted by line."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = sort_issues(issues)
        super().__init__("\n".join(str(i) for i in self.issues))
