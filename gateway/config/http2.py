"""HTTP/2's config keys: `server.http2` (accept it on the proxy port) and `upstream.protocol` (speak it upstream)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.reader import At, Block, Reader

UPSTREAM_PROTOCOLS = ("http1", "h2c")


def _read_server_http2(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "http2" in m and (on := r.boolean(m["http2"])) is not None:
        kw["http2"] = on


def _read_upstream_protocol(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "protocol" in m and (protocol := r.choice(m["protocol"], UPSTREAM_PROTOCOLS)) is not None:
        kw["protocol"] = protocol


SERVER_HTTP2_BLOCK = Block(("http2",), _read_server_http2)
UPSTREAM_PROTOCOL_BLOCK = Block(("protocol",), _read_upstream_protocol)
