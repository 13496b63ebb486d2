"""Fuzz path normalization: one safe spelling, idempotent, never a dot segment, same as a reference.

Input: byte 0 picks the decoding of the rest (latin-1, or UTF-8 with surrogate
escapes, as a server may hand over either), and the result is the raw path.

Invariants: `normalize_path` returns or raises PathError (nothing else); a result
starts with "/", has no empty, "." or ".." segment, only printable ASCII,
upper-case percent escapes of reserved octets only, is its own normalization,
and equals an independent reference (RFC 3986 §2.3 decoding of unreserved
octets, §6.2.2.1 case, then §5.2.4 dot removal over non-empty segments).
"""

from __future__ import annotations

import re
import string

from fuzz.common import Reader
from gateway.sanitize import PathError, normalize_path

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SAFE_RESULT = re.compile(r"/(?:[\x21-\x7e]*)")


def _reference(raw: str) -> str:
    def fold(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    segments = [s for s in _ESCAPE.sub(fold, raw).split("/")[1:]]
    out: list[str] = []
    for seg in segments:
        if seg == "..":
            if out:
                out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    trailing = bool(segments) and segments[-1] in ("", ".", "..")
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")


def check(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.byte()
    rest = reader.rest()
    raw = rest.decode("latin-1") if mode % 2 == 0 else rest.decode("utf-8", "surrogateescape")
    try:
        path = normalize_path(raw)
    except PathError as exc:
        assert exc.kind and str(exc), "a PathError without kind or sentence"
        return
    assert _SAFE_RESULT.fullmatch(path), "a result with a raw unsafe character"
    segments = path.split("/")[1:]
    assert all(seg not in (".", "..") for seg in segments), "a dot segment survived"
    assert "" not in segments[:-1], "an empty segment survived"
    for match in _ESCAPE.finditer(path):
        hexdigits = match.group(1)
        assert hexdigits == hexdigits.upper(), "a lower-case escape survived"
        assert chr(int(hexdigits, 16)) not in _UNRESERVED, "an encoded unreserved character survived"
    assert path.count("%") == len(_ESCAPE.findall(path)), "a bare '%' survived"
    assert normalize_path(path) == path, "normalization is not idempotent"
    assert path == _reference(raw), "differs from the RFC 3986 reference"
