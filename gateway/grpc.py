"""What the request path needs to know of gRPC: which requests are gRPC calls, and how long a call may wait.

gRPC runs over HTTP/2 (PROTOCOL-HTTP2.md in grpc/grpc): a call is a request whose
content-type is application/grpc (optionally +proto, +json, ...), its deadline
travels as `grpc-timeout`, and its outcome as `grpc-status` in the trailers.
"""

from __future__ import annotations

from collections.abc import Mapping

# grpc-timeout: at most 8 digits and one unit (Hours, Minutes, Seconds, milli, micro, nano).
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def is_grpc(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("Content-Type", "")
    return content_type == "application/grpc" or content_type.startswith(("application/grpc+", "application/grpc;"))


def upstream_deadline(headers: Mapping[str, str], timeout: float) -> float:
    """How long to wait for the upstream's answer: upstream.timeout, or the call's shorter grpc-timeout."""
    value = headers.get("grpc-timeout")
    if value is None or not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in _UNITS:
        return timeout  # absent or malformed: the upstream's own parser answers for the latter
    return min(timeout, int(value[:-1]) * _UNITS[value[-1]])
