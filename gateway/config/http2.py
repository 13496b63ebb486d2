"""HTTP/2's config keys: `server.http2` (accept it on the proxy port)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.reader import At, Block, Reader


def _read_server_http2(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "http2" in m and (on := r.boolean(m["http2"])) is not None:
        kw["http2"] = on


SERVER_HTTP2_BLOCK = Block(("http2",), _read_server_http2)
