"""The `upstream` section: where requests go, and how long to wait for it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway.config.http2 import UPSTREAM_PROTOCOL_BLOCK
from gateway.config.model import UpstreamConfig
from gateway.config.reader import At, Reader
from gateway.config.values import check_http_url

_UPSTREAM_KEYS = ("url", "connect_timeout", "timeout")


def parse_upstream(r: Reader, at: At) -> UpstreamConfig | None:
    m = r.mapping(at, (*_UPSTREAM_KEYS, *UPSTREAM_PROTOCOL_BLOCK.keys))
    if m is None:
        return None
    kw: dict[str, Any] = r.fill(at, m, (UPSTREAM_PROTOCOL_BLOCK,))
    if "url" in m and (url := r.string(m["url"])) is not None:
        try:
            check_http_url(url, allow_http=True, what="upstream url")
        except ValueError as exc:
            r.error(m["url"], str(exc))
        else:
            parts = urlsplit(url)
            if parts.path not in ("", "/") or parts.query:
                r.error(m["url"], "must be scheme://host[:port] only: requests keep their own path and query")
            else:
                kw["url"] = url.rstrip("/")
    for key in ("connect_timeout", "timeout"):
        if key in m and (seconds := r.duration(m[key])) is not None:
            kw[key] = seconds
    if kw.get("protocol") == "h2c" and kw.get("url", "").startswith("https:"):
        r.error(m["protocol"], "h2c is HTTP/2 without TLS: the url must be http://")
    return UpstreamConfig(**kw)
