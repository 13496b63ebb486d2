"""Parsers for the scalar formats of the YAML contract: durations, listen addresses, HTTP tokens, URLs.

Each parser takes the raw value and returns the typed value or raises
ValueError with a short sentence that is safe to show (it may quote the value:
none of these formats ever holds a secret).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from gateway.config.model import Listen

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP: Final = 'a duration such as "500ms", "30s", "10m", "24h" or "1h30m"'

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 1123 host names (labels of letters, digits and hyphens).
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")

# Headers the gateway or the HTTP layer owns: a claim must never be able to set them.
RESERVED_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        "Host", "Authorization", "Proxy-Authorization", "Proxy-Authenticate", "WWW-Authenticate",
        "Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "TE", "Trailer",
        "Connection", "Keep-Alive", "Upgrade", "Proxy-Connection", "Expect",
        "Cookie", "Set-Cookie", "Forwarded", "Via", "X-Real-IP", "X-Request-Id",
        "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
    )
)
RESERVED_HEADER_PREFIXES: Final = ("x-forwarded-", "access-control-request-")


def parse_duration(text: str) -> float:
    """Seconds in a duration string: units ms, s, m, h, d, combinable ("1h30m")."""
    s = text.strip()
    if s.startswith("-"):
        raise ValueError("must not be negative")
    if _DURATION.fullmatch(s) is None:
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            raise ValueError(f"{text!r} has no unit: write e.g. \"{s}s\" ({DURATION_HELP})")
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(s))


def parse_listen(text: str) -> Listen:
    """`host:port`; IPv6 literals in brackets (`[::1]:8080`); the host is kept without brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{text!r} is not host:port (IPv6 form: \"[::1]:8080\")")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not host:port, e.g. \"0.0.0.0:8080\"")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. \"[::]:8080\"")
        if not is_hostname(host):
            raise ValueError(f"{host!r} is not a host name or IP address")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:  # 0: any free port (tests, the demo)
        raise ValueError(f"port {port} is outside 0-65535")
    return Listen(host, port)


def is_hostname(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(text) is not None and not text.replace(".", "").isdigit()


def is_token(text: str) -> bool:
    """An RFC 9110 token: header names and method names."""
    return _TOKEN.fullmatch(text) is not None


def header_reserved(name: str) -> bool:
    low = name.lower()
    return low in RESERVED_HEADERS or low.startswith(RESERVED_HEADER_PREFIXES)


def check_http_url(text: str, *, allow_http: bool, what: str = "URL") -> None:
    """An absolute http(s) URL with a host; plain http only when `allow_http`."""
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid URL: {exc}") from None
    if "@" in parts.netloc:
        # Checked before anything quotes the URL: the message must not echo a password.
        raise ValueError(f"{what} must not carry credentials (user:password@)")
    try:
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise ValueError(f"{what} {text!r} has an invalid port") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        schemes = "http:// or https://" if allow_http else "https://"
        raise ValueError(f"{what} {text!r} must be an absolute {schemes} URL with a host")
    if parts.fragment:
        raise ValueError(f"{what} {text!r} must not have a #fragment")
    if port == 0:
        raise ValueError(f"{what} {text!r} has port 0")
    if scheme == "http" and not allow_http:
        raise ValueError(
            f"{what} {text!r} uses plain http://, which lets anyone on the path swap the keys: "
            "use https://, or set allow_http: true"
        )
