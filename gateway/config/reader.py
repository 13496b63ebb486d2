"""What every config section module shares: located values, the error collector and the parser primitives.

A section module reads its part of the document through a `Reader`: each
primitive (`mapping`, `seq`, `string`, `duration`, ...) returns the typed value
or None, and records a ConfigIssue (key path, line, safe sentence) instead of
raising, so one pass reports every mistake. A `Block` is the part of a mapping
one module owns: its keys and how they fill the fields of the config value
being built; a mapping made of blocks (the document, `server`, an issuer) gains
a feature by listing one more block.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.errors import ConfigIssue
from gateway.config.model import Listen
from gateway.config.values import DURATION_HELP, parse_duration, parse_listen
from gateway.config.yaml_lines import MarkedMap, MarkedSeq

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # path segments that need no quoting
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # names become metric label values


@dataclass(frozen=True, slots=True)
class At:
    """A value in the document with its key path and line."""

    value: Any
    path: str
    line: int | None


def child_path(parent: str, key: str) -> str:
    if _IDENT.fullmatch(key) is None:
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


def kind(value: object) -> str:
    """What a YAML value is, in words, for messages (never the value itself)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a YAML {type(value).__name__} value"


def suggest(word: str, choices: Iterable[str]) -> str:
    options = list(choices)
    for choice in options:
        if choice.lower() == word.lower():
            return f"; did you mean {choice!r}?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def names(choices: Iterable[str]) -> str:
    return ", ".join(choices)


def value_line(node: MarkedMap, key: str) -> int:
    """Where a value is: its own line for a scalar, the key's line for a block collection
    (which starts on the next line), so that an error about the whole section names its key."""
    if isinstance(node[key], (MarkedMap, MarkedSeq)):
        return node.key_lines[key]
    return node.value_lines[key]


def is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def claim_path_ok(path: str) -> bool:
    return bool(path) and all(path.split("."))


class Reader:
    """One validation pass over one document: typed values out, every problem collected in `issues`."""

    def __init__(self, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.environ = environ
        self.issues: list[ConfigIssue] = []

    # --- reporting -----------------------------------------------------------------

    def error(self, at: At, message: str) -> None:
        self.issues.append(ConfigIssue(at.path, at.line, message, self.source))

    def error_at(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(ConfigIssue(path, line, message, self.source))

    # --- structure -----------------------------------------------------------------

    def mapping(self, at: At, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, At] | None:
        """The known keys of a mapping as located values; unknown and missing keys are reported."""
        if not isinstance(at.value, MarkedMap):
            self.error(at, f"must be a mapping, got {kind(at.value)}")
            return None
        node = at.value
        out: dict[str, At] = {}
        for key, value in node.items():
            path = child_path(at.path, key)
            if key not in allowed:
                hint = suggest(key, allowed) or f"; allowed: {names(allowed)}"
                self.error_at(path, node.key_lines[key], f"unknown key {key!r}{hint}")
                continue
            out[key] = At(value, path, value_line(node, key))
        for key in required:
            if key not in node:
                self.error_at(child_path(at.path, key), at.line, f"missing required key {key!r}")
        return out

    def seq(self, at: At, *, nonempty: bool = True, what: str = "item") -> list[At] | None:
        if not isinstance(at.value, MarkedSeq):
            self.error(at, f"must be a list, got {kind(at.value)}")
            return None
        if nonempty and not at.value:
            self.error(at, f"must list at least one {what}")
            return None
        return [At(v, f"{at.path}[{i}]", at.value.item_lines[i]) for i, v in enumerate(at.value)]

    def entries(self, at: At, *, nonempty: bool = True) -> list[tuple[str, int, At]] | None:
        """A free-form mapping (user-chosen keys): (key, key line, located value)."""
        if not isinstance(at.value, MarkedMap):
            self.error(at, f"must be a mapping, got {kind(at.value)}")
            return None
        if nonempty and not at.value:
            self.error(at, "must not be empty")
            return None
        node = at.value
        return [(k, node.key_lines[k], At(v, child_path(at.path, k), value_line(node, k))) for k, v in node.items()]

    def blocks(
        self, at: At, blocks: Sequence[Block], required: Sequence[str] = ()
    ) -> tuple[dict[str, At], dict[str, Any]] | None:
        """A mapping made of blocks: its located keys, and the fields the blocks read from them."""
        found = self.mapping(at, block_keys(blocks), required)
        if found is None:
            return None
        return found, self.fill(at, found, blocks)

    def fill(self, at: At, found: Mapping[str, At], blocks: Sequence[Block]) -> dict[str, Any]:
        """The fields `blocks`, in order, read from the located keys `found` of the mapping at `at`."""
        fields: dict[str, Any] = {}
        for block in blocks:
            block.read(self, at, found, fields)
        return fields

    # --- scalars -------------------------------------------------------------------

    def string(self, at: At) -> str | None:
        if not isinstance(at.value, str):
            self.error(at, f"must be a string, got {kind(at.value)}")
            return None
        if not at.value.strip():
            self.error(at, "must not be empty")
            return None
        return at.value

    def boolean(self, at: At) -> bool | None:
        if not isinstance(at.value, bool):
            self.error(at, f"must be true or false, got {kind(at.value)}")
            return None
        return at.value

    def integer(self, at: At, low: int, high: int) -> int | None:
        # bool is an int subclass in Python; `true` is not a size.
        if isinstance(at.value, bool) or not isinstance(at.value, int):
            self.error(at, f"must be an integer, got {kind(at.value)}")
            return None
        if not low <= at.value <= high:
            self.error(at, f"must be between {low} and {high}, got {at.value}")
            return None
        return at.value

    def duration(self, at: At, *, allow_zero: bool = False) -> float | None:
        if isinstance(at.value, (int, float)) and not isinstance(at.value, bool):
            self.error(at, f"a bare number has no unit: write e.g. \"{at.value}s\" ({DURATION_HELP})")
            return None
        if not isinstance(at.value, str):
            self.error(at, f"must be {DURATION_HELP}, got {kind(at.value)}")
            return None
        try:
            seconds = parse_duration(at.value)
        except ValueError as exc:
            self.error(at, str(exc))
            return None
        if seconds == 0 and not allow_zero:
            self.error(at, "must be greater than 0")
            return None
        return seconds

    def choice(self, at: At, choices: Sequence[str]) -> str | None:
        value = self.string(at)
        if value is None:
            return None
        if value not in choices:
            self.error(at, f"{value!r} is not one of {names(choices)}{suggest(value, choices)}")
            return None
        return value

    def label(self, at: At, seen: dict[str, int | None], *, what: str) -> str | None:
        """A name that becomes a metric label value, unique among `seen` (which it joins); the string even when not."""
        name = self.string(at)
        if name is not None:
            if LABEL.fullmatch(name) is None:
                self.error(at, f"{name!r} must be 1-63 letters, digits, '_', '.' or '-' (it is a metric label)")
            elif name in seen:
                self.error(at, f"{what} {name!r} is used twice (first on line {seen[name]})")
            else:
                seen[name] = at.line
        return name

    def listen(self, at: At) -> Listen | None:
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            self.error(at, f"must be a \"host:port\" string, e.g. \"0.0.0.0:{at.value}\"")
            return None
        text = self.string(at)
        if text is None:
            return None
        try:
            return parse_listen(text)
        except ValueError as exc:
            self.error(at, str(exc))
            return None

    def strings(
        self, at: At, *, what: str, fold: Callable[[str], str] = lambda s: s, check: Callable[[At, str], bool] | None = None
    ) -> tuple[str, ...] | None:
        """A non-empty list of non-empty strings without duplicates (compared after `fold`)."""
        items = self.seq(at, what=what)
        if items is None:
            return None
        out: list[str] = []
        seen: dict[str, int | None] = {}
        ok = True
        for item in items:
            value = self.string(item)
            if value is None or (check is not None and not check(item, value)):
                ok = False
                continue
            key = fold(value)
            if key in seen:
                self.error(item, f"{value!r} is listed twice (first on line {seen[key]})")
                ok = False
                continue
            seen[key] = item.line
            out.append(value)
        return tuple(out) if ok else None

    def networks(self, at: At) -> tuple[str, ...] | None:
        """A non-empty list of IP addresses or CIDRs (host bits clear), as written."""

        def check(item: At, text: str) -> bool:
            try:
                ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                self.error(item, f"{text!r} is not an IP address or CIDR, e.g. 10.0.0.0/8 ({exc})")
                return False
            return True

        return self.strings(at, what="peer address or CIDR", check=check)

    def plain(self, at: At) -> Any:
        """The JSON-compatible copy of a YAML value (dict/list/str/int/float/bool/None)."""
        ok = True

        def convert(value: Any, path: str, line: int | None) -> Any:
            nonlocal ok
            if isinstance(value, MarkedMap):
                return {k: convert(v, child_path(path, k), value.value_lines[k]) for k, v in value.items()}
            if isinstance(value, MarkedSeq):
                return [convert(v, f"{path}[{i}]", value.item_lines[i]) for i, v in enumerate(value)]
            if isinstance(value, float) and not math.isfinite(value):
                ok = False
                self.error_at(path, line, "must be a finite number")
            elif value is not None and not isinstance(value, (str, int, float, bool)):
                ok = False
                self.error_at(path, line, f"{kind(value)} is not JSON: quote it")
            return value

        result = convert(at.value, at.path, at.line)
        return result if ok else None

    # --- files named in the document ---------------------------------------------------

    def resolve(self, name: str) -> Path:
        """A path from the document: relative ones are relative to the config file."""
        path = Path(name)
        return path if path.is_absolute() else self.base_dir / path

    def read_file(self, at: At, path: Path, *, what: str, limit: int) -> bytes | None:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                # A FIFO or device would block or never end: only regular files (symlinks followed).
                self.error(at, f"{what} {path} is not a regular file")
                return None
            if info.st_size > limit:
                self.error(at, f"{what} {path} is larger than {limit} bytes")
                return None
            with path.open("rb") as f:
                return f.read(limit + 1)[:limit]
        except FileNotFoundError:
            self.error(at, f"{what} {path} does not exist")
        except OSError as exc:
            self.error(at, f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}")
        return None

    # --- the whole document ------------------------------------------------------------

    def report_duplicates(self, value: Any, path: str, seen: set[int]) -> None:
        """Duplicate mapping keys anywhere, reported with the key path and both lines."""
        if id(value) in seen:
            return  # an aliased node: visit once
        if isinstance(value, MarkedMap):
            seen.add(id(value))
            for dup in value.duplicates:
                self.error_at(
                    child_path(path, dup.key), dup.line, f"duplicate key {dup.key!r} (first on line {dup.first_line})"
                )
            for key, child in value.items():
                self.report_duplicates(child, child_path(path, key), seen)
        elif isinstance(value, MarkedSeq):
            seen.add(id(value))
            for i, child in enumerate(value):
                self.report_duplicates(child, f"{path}[{i}]", seen)


BlockReader = Callable[[Reader, At, Mapping[str, At], dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Block:
    """The keys of a mapping one module owns, and `read(reader, mapping_at, found, fields)`,
    which reads those of its keys present in `found` into `fields` (the keyword arguments of
    the config value being built; blocks listed earlier have already filled theirs)."""

    keys: tuple[str, ...]
    read: BlockReader


def block_keys(blocks: Sequence[Block]) -> list[str]:
    return [key for block in blocks for key in block.keys]


def section(key: str, parse: Callable[[Reader, At], Any]) -> Block:
    """A block of one key whose value `parse` turns into the field of the same name (None: keep the default)."""

    def read(r: Reader, _at: At, found: Mapping[str, At], fields: dict[str, Any]) -> None:
        if key in found and (value := parse(r, found[key])) is not None:
            fields[key] = value

    return Block((key,), read)


def same_socket(a: Listen, b: Listen) -> bool:
    """Whether two listen addresses would collide on bind."""
    wildcard = ("0.0.0.0", "::")
    return a.port == b.port != 0 and (a.host == b.host or a.host in wildcard or b.host in wildcard)
