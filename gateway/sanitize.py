"""Normalize a request path once, so that routing and the upstream see the same single spelling of it.

The normalization (``normalize_path``), applied to the request-target path exactly
as received (still percent-encoded, the query already split off):

1. The path must start with ``/``.
2. Rejected (400, ``PathError``), because each lets one path be read two ways by
   the gateway and an application behind it:

   - a raw character outside printable ASCII (controls U+0000-U+001F, space,
     DEL, anything non-ASCII), a raw ``\\``, ``#`` or ``?``;
   - a ``;`` anywhere: path parameters (RFC 3986 §3.3) let ``/admin;x`` reach
     a framework's ``/admin`` while the gateway routes ``/admin;x``;
   - invalid percent-encoding: ``%`` not followed by two hex digits;
   - an encoded ``/`` (``%2F``), ``\\`` (``%5C``) or ``;`` (``%3B``), and an
     encoded control character (``%00``-``%1F``, ``%7F``): applications
     disagree on whether they split or truncate on them.

3. Percent-encoded unreserved characters (RFC 3986 §2.3: ``A-Z a-z 0-9 - . _ ~``)
   are decoded (``/%61dmin`` is ``/admin``); every other ``%XX`` is kept, with
   its hex digits upper-cased (RFC 3986 §6.2.2.1: ``%c3%a9`` is ``%C3%A9``).
4. Empty segments are dropped: repeated slashes are merged (``//a///b`` is
   ``/a/b``), before dot segments are resolved (``/a//../b`` is ``/b``).
5. Dot segments are removed per RFC 3986 §5.2.4, after decoding (so
   ``%2e%2e`` is ``..``); ``..`` at the root stays at the root
   (``/../a`` is ``/a``).
6. A trailing slash is kept, and a final ``.`` or ``..`` segment leaves one
   (``/a/b/..`` is ``/a/``, ``/a/.`` is ``/a/``).

The result is what routes are matched against and exactly what the upstream
receives. It is idempotent and never contains ``//``, a ``.`` or ``..``
segment, lower-case percent-encoding or an encoded unreserved character.
A path that needs none of this (no ``%``, no ``//``, no ``/.``, nothing
rejected) is returned unchanged after a single regex match.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["PathError", "normalize_path"]


class PathError(ValueError):
    """A path that cannot be normalized safely (400): `kind` is a machine code,
    the message a fixed sentence that never echoes the path."""

    __slots__ = ("kind",)

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Characters a raw path may carry: printable ASCII except % (handled by the slow
# path) and the rejected \ ; # ? -- and / which separates segments.
_SEG_CHAR = r"\x21\x22\x24\x26-\x2e\x30-\x3a\x3c-\x3e\x40-\x5b\x5d-\x7e"
_SEG_FIRST = r"\x21\x22\x24\x26-\x2d\x30-\x3a\x3c-\x3e\x40-\x5b\x5d-\x7e"  # without "."
# Paths left unchanged by the normalization: "/" or non-empty segments that do
# not start with "." (so no "//" and no "/."), nothing encoded, nothing
# rejected. Every repetition is anchored by a "/", so matching is linear.
_FAST: Final = re.compile(
    rf"/(?:[{_SEG_FIRST}][{_SEG_CHAR}]*(?:/[{_SEG_FIRST}][{_SEG_CHAR}]*)*/?)?"
)
# Raw characters rejected anywhere in the path (the complement of the segment
# characters, "/" and "%").
_FORBIDDEN_RAW: Final = re.compile(r"[^\x21-\x7e]|[\\;#?]")

_UNRESERVED: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


def _build_percent_tables() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    # Keyed by the two characters after "%", in every mix of case, so the slow
    # path does one dict lookup per escape.
    replace: dict[str, str] = {}
    forbidden: dict[str, tuple[str, str]] = {}
    hexdigits = "0123456789abcdefABCDEF"
    for hi in hexdigits:
        for lo in hexdigits:
            key = hi + lo
            code = int(key, 16)
            char = chr(code)
            if code == 0x2F:
                forbidden[key] = ("encoded_slash", "encoded '/' in path")
            elif code == 0x5C:
                forbidden[key] = ("backslash", "backslash in path")
            elif code == 0x3B:
                forbidden[key] = ("semicolon", "';' in path")
            elif code < 0x20 or code == 0x7F:
                forbidden[key] = ("control_char", "control character in path")
            elif char in _UNRESERVED:
                replace[key] = char
            else:
                replace[key] = "%" + key.upper()
    return replace, forbidden


_PCT_REPLACE, _PCT_FORBIDDEN = _build_percent_tables()


def _raw_error(char: str) -> PathError:
    if char == "\\":
        return PathError("backslash", "backslash in path")
    if char == ";":
        return PathError("semicolon", "';' in path")
    if char in "#?":
        return PathError("bad_char", "'#' or '?' in path")
    if char.isascii():
        return PathError("control_char", "control character or space in path")
    return PathError("non_ascii", "raw non-ASCII character in path")


def normalize_path(raw_path: str) -> str:
    """Return the one normalized spelling of `raw_path` (see the module
    docstring), or raise PathError when it cannot be normalized safely."""
    if _FAST.fullmatch(raw_path) is not None:
        return raw_path
    if not raw_path.startswith("/"):
        raise PathError("not_absolute", "path must start with '/'")
    bad = _FORBIDDEN_RAW.search(raw_path)
    if bad is not None:
        raise _raw_error(bad.group())

    path = raw_path
    if "%" in path:
        pieces = path.split("%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            key = piece[:2]
            rep = _PCT_REPLACE.get(key)
            if rep is None:
                forbidden = _PCT_FORBIDDEN.get(key)
                if forbidden is not None:
                    raise PathError(*forbidden)
                raise PathError("bad_percent", "invalid percent-encoding in path")
            out.append(rep)
            out.append(piece[2:])
        # Decoding cannot create "/" or "%" (both stay encoded or are
        # rejected), so segments and escapes are the same after it.
        path = "".join(out)

    # RFC 3986 §5.2.4 over whole segments; empty segments dropped first.
    stack: list[str] = []
    segments = path.split("/")
    last = len(segments) - 1
    trailing = False
    for i in range(1, last + 1):
        seg = segments[i]
        if seg == "" or seg == ".":
            trailing = i == last
        elif seg == "..":
            if stack:
                stack.pop()
            trailing = i == last
        else:
            stack.append(seg)
            trailing = False
    if not stack:
        return "/"
    result = "/" + "/".join(stack)
    return result + "/" if trailing else result
