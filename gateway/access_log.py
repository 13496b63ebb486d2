"""One JSON line per request on stdout: what happened, never a token or a query string."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _quote
from typing import TextIO

from gateway.local_reply import Decision

_SUB_MAX = 256  # a hostile token could carry a huge sub; the log line stays bounded


class Listener(StrEnum):
    """Which port a request came in on: the `listener` metric label and log field."""

    PROXY = "proxy"
    AUTHZ = "authz"


@dataclass(slots=True)
class Exchange:
    """Per-request state the handler fills as the request moves down the path."""

    request_id: str
    method: str
    started: float  # perf_counter
    path: str = ""  # normalized path, no query (a query may carry a token)
    route: str = "no_route"
    status: int = 0
    decision: Decision = Decision.ALLOW
    reason: str | None = None
    issuer: str | None = None
    sub: str | None = None
    upstream_seconds: float | None = None
    listener: Listener = Listener.PROXY
    dpop_nonce: str | None = None  # a fresh DPoP-Nonce for the answer (RFC 9449 §8.2); never logged


def _opt(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def format_line(ex: Exchange, duration: float, now: float) -> str:
    """The JSON object of one request. Every string goes through the JSON encoder's own quoting."""
    upstream_ms = "null" if ex.upstream_seconds is None else f"{ex.upstream_seconds * 1000:.3f}"
    sub = None if ex.sub is None else ex.sub[:_SUB_MAX]
    return (
        f'{{"ts":{now:.3f},"listener":"{ex.listener.value}","request_id":{_quote(ex.request_id)},"method":{_quote(ex.method)},'
        f'"path":{_quote(ex.path)},"route":{_quote(ex.route)},"status":{ex.status},'
        f'"duration_ms":{duration * 1000:.3f},"upstream_ms":{upstream_ms},"issuer":{_opt(ex.issuer)},'
        f'"sub":{_opt(sub)},"decision":"{ex.decision.value}","reason":{_opt(ex.reason)}}}\n'
    )


class AccessLog:
    """Lines are gathered and written once per event-loop turn: under load one write carries
    many lines, and none waits longer than the current turn."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._pending: list[str] = []

    def write(self, ex: Exchange, duration: float) -> None:
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tests, shutdown): write at once
                self._pending.append(format_line(ex, duration, time.time()))
                self.flush()
                return
        self._pending.append(format_line(ex, duration, time.time()))

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write("".join(lines))
            self._stream.flush()
