"""The `server` section: listeners, shutdown grace, size caps, CORS preflights, workers (TLS in config/tls.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.authz import AUTHZ_BLOCK
from gateway.config.dpop import SERVER_DPOP_BLOCK
from gateway.config.http2 import SERVER_HTTP2_BLOCK
from gateway.config.model import ServerConfig
from gateway.config.reader import At, Block, Reader, same_socket
from gateway.config.tls import TLS_BLOCKS

MAX_HEADER_BYTES_RANGE = (1024, 1 << 20)
WORKERS_RANGE = (1, 64)
MAX_TOKEN_BYTES_RANGE = (256, 1 << 20)
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_CONNECTIONS_RANGE = (1, 1 << 20)
MAX_INFLIGHT_RANGE = (0, 1 << 20)


def _read_core(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    for key in ("listen", "admin_listen"):
        if key in m and (addr := r.listen(m[key])) is not None:
            kw[key] = addr
    if "listen" in kw and "admin_listen" in kw and same_socket(kw["listen"], kw["admin_listen"]):
        r.error(m["admin_listen"], f"must not share a port with listen ({kw['listen']})")
    if "shutdown_grace" in m and (grace := r.duration(m["shutdown_grace"], allow_zero=True)) is not None:
        kw["shutdown_grace"] = grace
    if "max_header_bytes" in m:
        if (n := r.integer(m["max_header_bytes"], *MAX_HEADER_BYTES_RANGE)) is not None:
            kw["max_header_bytes"] = n
    if "max_token_bytes" in m:
        if (n := r.integer(m["max_token_bytes"], *MAX_TOKEN_BYTES_RANGE)) is not None:
            header_cap = kw.get("max_header_bytes", ServerConfig().max_header_bytes)
            if n > header_cap:
                r.error(m["max_token_bytes"], f"{n} exceeds max_header_bytes ({header_cap}): no such token could arrive")
            else:
                kw["max_token_bytes"] = n
    if "cors_preflight" in m and (mode := r.choice(m["cors_preflight"], ("bypass", "check"))) is not None:
        kw["cors_preflight"] = mode
    if "workers" in m and (workers := r.integer(m["workers"], *WORKERS_RANGE)) is not None:
        kw["workers"] = workers
    if "log_level" in m and (level := r.choice(m["log_level"], LOG_LEVELS)) is not None:
        kw["log_level"] = level


def _read_limits(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    for key in ("header_timeout", "idle_timeout", "send_timeout", "body_timeout"):
        if key in m and (seconds := r.duration(m[key])) is not None:
            kw[key] = seconds
    if "max_connections" in m and (n := r.integer(m["max_connections"], *MAX_CONNECTIONS_RANGE)) is not None:
        kw["max_connections"] = n
    if "max_inflight" in m and (n := r.integer(m["max_inflight"], *MAX_INFLIGHT_RANGE)) is not None:
        kw["max_inflight"] = n


# The keys of `server`, one block per feature (a new feature adds its module's block here).
SERVER_BLOCKS: tuple[Block, ...] = (
    Block(
        ("listen", "admin_listen", "shutdown_grace", "max_header_bytes", "max_token_bytes", "cors_preflight", "workers",
         "log_level"),
        _read_core,
    ),
    *TLS_BLOCKS,
    AUTHZ_BLOCK,
    Block(
        ("header_timeout", "idle_timeout", "send_timeout", "body_timeout", "max_connections", "max_inflight"),
        _read_limits,
    ),
    SERVER_HTTP2_BLOCK,
    SERVER_DPOP_BLOCK,
)


def parse_server(r: Reader, at: At) -> ServerConfig | None:
    read = r.blocks(at, SERVER_BLOCKS)
    return None if read is None else ServerConfig(**read[1])
