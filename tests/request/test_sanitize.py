"""Tests for gateway.sanitize: the one path normalization routing and the upstream share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sanitize import PathError, normalize_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/admin", "/admin"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2E/admin", "/admin"),
        ("/public/.%2e/admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/%41", "/A"),
        ("/%7e", "/~"),
        ("/%7Euser/%2D%2e%5F", "/~user/-._"),
        ("//admin", "/admin"),
        ("///a////b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/", "/a/b/"),
        ("/a//", "/a/"),
        ("/a/b/../", "/a/"),
        ("/..", "/"),
        ("/../../admin", "/admin"),
        ("/a/../../../admin/", "/admin/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/a//../b", "/b"),  # empty segments dropped before dot segments
        ("/%c3%a9", "/%C3%A9"),
        ("/%C3%A9", "/%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%25b", "/a%25b"),  # an encoded '%' stays encoded: no double decoding
        ("/%252e%252e/admin", "/%252e%252e/admin"),
        ("/a%3fb%23c", "/a%3Fb%23c"),
        ("/...", "/..."),
        ("/..a/.b/c.", "/..a/.b/c."),
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        ("/a:b/@c/!$&'()*+,=", "/a:b/@c/!$&'()*+,="),
    ],
)
def test_normalizes(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("", "not_absolute"),
        ("admin", "not_absolute"),
        ("*", "not_absolute"),
        ("http://host/admin", "not_absolute"),
        ("/public%2F..%2Fadmin", "encoded_slash"),
        ("/public/..%2fadmin", "encoded_slash"),
        ("/a\\b", "backslash"),
        ("/..\\admin", "backslash"),
        ("/a%5cb", "backslash"),
        ("/a%5Cb", "backslash"),
        ("/a\x00b", "control_char"),
        ("/a%00b", "control_char"),
        ("/a%0d%0ab", "control_char"),
        ("/a%7f", "control_char"),
        ("/a\tb", "control_char"),
        ("/a b", "control_char"),
        ("/a\x7f", "control_char"),
        ("/admin;x", "semicolon"),
        ("/admin;", "semicolon"),
        ("/a;b/c", "semicolon"),
        ("/admin%3bx", "semicolon"),
        ("/a#b", "bad_char"),
        ("/a?b", "bad_char"),
        ("/a%zz", "bad_percent"),
        ("/a%4", "bad_percent"),
        ("/a%", "bad_percent"),
        ("/a%%41", "bad_percent"),
        ("/a%g1", "bad_percent"),
        ("/é", "non_ascii"),
        ("/a\u2028", "non_ascii"),
    ],
)
def test_rejects(raw: str, kind: str) -> None:
    with pytest.raises(PathError) as info:
        normalize_path(raw)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


def test_error_message_never_echoes_the_path() -> None:
    with pytest.raises(PathError) as info:
        normalize_path("/secret-token-value;x")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("raw", ["/", "/api/v1/orders", "/a/b/", "/x-y_z~.json", "/a.b/c..d"])
def test_fast_path_returns_the_same_object(raw: str) -> None:
    assert normalize_path(raw) is raw


# -- properties ---------------------------------------------------------------

_ENCODED_UNRESERVED = re.compile(r"%(?:4[1-9A-F]|5[0-9A]|6[1-9A-F]|7[0-9A]|3[0-9]|2D|2E|5F|7E)", re.I)

_segment = st.one_of(
    st.sampled_from(["", ".", "..", "%2e", "%2E%2e", ".%2E", "a", "admin", "%61", "%7E", "%c3%a9", "%25", "x.y", "..."]),
    st.text(alphabet="abcXYZ019-._~!$&'()*+,=:@%", max_size=6),
)
_paths = st.lists(_segment, max_size=8).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=500)
@given(_paths)
def test_output_is_normal_and_idempotent(raw: str) -> None:
    try:
        out = normalize_path(raw)
    except PathError:
        return
    assert out.startswith("/")
    assert "//" not in out
    segments = out.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert _ENCODED_UNRESERVED.search(out) is None
    assert all(re.fullmatch(r"[0-9A-F]{2}", h) for h in re.findall(r"%(..)", out))
    assert normalize_path(out) == out


@settings(max_examples=300)
@given(st.text(max_size=20))
def test_arbitrary_input_normalizes_or_raises_path_error(raw: str) -> None:
    try:
        out = normalize_path("/" + raw)
    except PathError:
        return
    assert normalize_path(out) == out
    assert out.isascii() and out.isprintable()
    assert ";" not in out and "\\" not in out


def _reference(raw: str) -> str:
    """A slow, literal transcription of the documented steps, with RFC 3986
    §5.2.4's buffer algorithm, to diff the optimized code against."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise PathError("bad_percent", "")

    def fix(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        if char in "/\\;" or ord(char) < 0x20 or ord(char) == 0x7F:
            raise PathError("forbidden", "")
        return char if re.fullmatch(r"[A-Za-z0-9._~-]", char) else "%" + m.group(1).upper()

    text = re.sub(r"%([0-9A-Fa-f]{2})", fix, raw)
    text = re.sub(r"/+", "/", text)
    inp, out = text, ""
    while inp:
        if inp.startswith("/./"):
            inp = inp[2:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = inp[3:]
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp == "/..":
            inp = "/"
            out = out[: out.rfind("/")] if "/" in out else ""
        else:
            nxt = inp.find("/", 1)
            seg, inp = (inp, "") if nxt < 0 else (inp[:nxt], inp[nxt:])
            out += seg
    return out or "/"


@settings(max_examples=500)
@given(_paths)
def test_matches_reference_algorithm(raw: str) -> None:
    try:
        expected: str | None = _reference(raw)
    except PathError:
        expected = None
    try:
        actual: str | None = normalize_path(raw)
    except PathError:
        actual = None
    assert actual == expected
