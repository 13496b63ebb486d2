"""One JSON line per request on stdout: what happened, never a token or a query string."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from gateway.local_reply import Decision

_SUB_MAX = 256  # a hostile token could carry a huge sub; the log line stays bounded


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


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, ex: Exchange, duration: float) -> None:
        record = {
            "ts": round(time.time(), 3),
            "request_id": ex.request_id,
            "method": ex.method,
            "path": ex.path,
            "route": ex.route,
            "status": ex.status,
            "duration_ms": round(duration * 1000, 3),
            "upstream_ms": None if ex.upstream_seconds is None else round(ex.upstream_seconds * 1000, 3),
            "issuer": ex.issuer,
            "sub": ex.sub[:_SUB_MAX] if ex.sub is not None else None,
            "decision": ex.decision.value,
            "reason": ex.reason,
        }
        stream = self._stream
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        stream.flush()
