"""What every server protocol on the proxy port shares: the request as plain values, and the connection limits.

A server protocol (HTTP/1.1 in http1.py, HTTP/2 in http2.py) turns
bytes into `ServerRequest`s and hands each to the request path, which answers
through the same object. The protocol knows nothing of tokens; the request path
knows nothing of framing. Both share one `Edge` per listener: it admits or
refuses connections (server.max_connections), admits or sheds requests
(server.max_inflight), and sweeps every open connection once in a while for the
head and idle deadlines (server.header_timeout, server.idle_timeout) and for
waits on a client that no longer moves (server.send_timeout: a response it does
not take; server.body_timeout: a request body it does not send) instead of
keeping a timer per connection or per write.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol, cast

from multidict import CIMultiDictProxy

from gateway.local_reply import Decision, LocalReply
from gateway.metrics import Metrics

SWEEP_MAX_SECONDS = 0.5  # deadlines are kept to within this (or a tenth of the shortest timeout)
SWEEP_BATCH = 128  # connections checked between two yields to the event loop


class Body(Protocol):
    """A request body as it arrives (never held whole): what the request path reads."""

    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    def at_eof(self) -> bool: ...


class Tunnel(Protocol):
    """The client's side of an upgraded connection (WebSocket): raw bytes both ways."""

    async def read(self) -> bytes: ...  # b"" once the client closed
    async def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class ServerRequest(Protocol):
    """One request as a server protocol hands it to the request path, and the way to answer it."""

    # Read-only views (properties), so each protocol may keep them as it likes.
    @property
    def method(self) -> str: ...
    @property
    def raw_path(self) -> str:
        """The request target as sent (origin-form expected)."""
    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Case-insensitive, repeats kept, in arrival order."""
    @property
    def remote(self) -> str | None:
        """The peer's address."""
    @property
    def scheme(self) -> str:
        """"http", or "https" on a TLS connection."""
    @property
    def transport(self) -> Any:
        """The connection's transport: TLS details (peer certificate) via get_extra_info."""
    @property
    def body(self) -> Body: ...
    @property
    def content_length(self) -> int | None:
        """None: chunked or no body."""
    @property
    def has_body(self) -> bool: ...
    @property
    def response_started(self) -> bool: ...
    @property
    def expired(self) -> Deadline | None:
        """The deadline the edge cut this request at (its task is then cancelled); None if it did not."""

    def send_local(self, reply: LocalReply) -> None:
        """A reply the gateway writes itself: one write."""

    def send_continue(self) -> None:
        """`100 Continue` when the client asked for it (RFC 9110 §10.1.1); nothing otherwise."""

    async def send_response(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """A whole response in one write; `headers` already frame `body` (Content-Length)."""

    async def start_response(
        self, status: int, reason: str, headers: list[tuple[str, str]], *, chunked: bool
    ) -> None:
        """The response head; with `chunked` the body's length is unknown and the protocol frames it."""

    async def write(self, data: bytes) -> None:
        """A piece of the response body; waits while the client's socket buffer is full."""

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """The response body is complete; `trailers` (an HTTP/2 upstream's, gRPC's status) follow it
        where the protocol can carry them."""

    def abort(self) -> None:
        """Cut the connection: a truncated body must never look complete."""

    def upgrade(self) -> Tunnel:
        """After a 101 response: the client's bytes from here on, and a way to send it bytes."""


Handler = Callable[[ServerRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection hygiene for one listener (config: server.*)."""

    header_timeout: float = 10.0  # a started request head must be complete by then: 408, close
    idle_timeout: float = 60.0  # a connection waiting for its next request that long is closed
    send_timeout: float = 60.0  # a response write the client takes no byte of for that long: cut
    body_timeout: float = 60.0  # no request body byte for that long while the request path awaits one: 408
    max_connections: int = 10000  # beyond it a new connection is closed at once
    max_inflight: int = 0  # >0: beyond it a request gets 503 at once (0: no limit)
    max_header_bytes: int = 16384  # a longer request line or header line gets 431


@dataclass(frozen=True, slots=True)
class Deadline:
    """Why the edge cut a request whose client stopped moving, and what the request path still answers."""

    reason: str  # gateway_connections_rejected_total{reason} and the access log's reason
    answer: Decision | None  # the local reply still owed (nothing of a response sent yet); None: cut, logged 499


SEND_TIMEOUT = Deadline("send_timeout", None)  # the client takes nothing: nothing more can reach it
BODY_TIMEOUT = Deadline("body_timeout", Decision.BODY_TIMEOUT)  # 408, then close (RFC 9110 §15.5.9)
BODY_TIMEOUT_ANSWERING = Deadline("body_timeout", None)  # the answer had begun: only a cut is left


class Stall:
    """One wait on a client as the sweep sees it: since when it last made progress. A slow client
    that keeps moving is never cut; only one that stops for the whole timeout is."""

    __slots__ = ("_mark", "_since")

    def __init__(self) -> None:
        self._mark: tuple[int, int] | None = None
        self._since = 0.0

    def seconds(self, now: float, done: int, left: int = 0) -> float:
        """Seconds without progress; progress is `done` changing or `left` dropping below what it was."""
        mark = self._mark
        if mark is None or done != mark[0] or left < mark[1]:
            self._mark, self._since = (done, left), now
        return now - self._since

    def clear(self) -> None:
        """The wait ended: the next one is measured from its own start."""
        self._mark = None


def unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes written to the client it has not taken yet: the transport's buffer and, on Linux, the
    socket's send queue (SIOCOUTQ). Counting the kernel's part makes a slow reader's progress show
    as it reads, not only once a send buffer of megabytes has drained by a third."""
    pending = cast(asyncio.WriteTransport, transport).get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            pending += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            pass  # not Linux, or the socket is gone: the transport's buffer alone
    return pending


class Connection(Protocol):
    """What the edge needs of one open connection, whatever its protocol."""

    def expire(self, now: float) -> None:
        """Act on a deadline that passed at `now` (loop time): 408 a stalled head, close an idle one."""

    def shut_down(self) -> None:
        """The process is stopping: close now if idle, else after the current response."""

    def abort(self) -> None: ...


def peer_address(transport: asyncio.BaseTransport) -> str | None:
    """The client's IP address as the socket reports it (None on a Unix socket)."""
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) else None


class Edge:
    """One listener's shared state: the handler, limits, open connections, in-flight count, metrics."""

    def __init__(
        self, handler: Handler, record_refused: Callable[[Decision], None], limits: Limits, metrics: Metrics
    ) -> None:
        self.handler = handler
        self.record_refused = record_refused  # count and log a request the request path never saw
        self.limits = limits
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.inflight = 0
        self.draining = False
        self.date = _http_date()
        self._sweeper: asyncio.Task[None] | None = None
        self._rejected = {
            reason: metrics.connections_rejected.labels(reason)
            for reason in ("max_connections", "header_timeout", "idle_timeout", "send_timeout", "body_timeout")
        }

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def apply(self, limits: Limits) -> None:
        """A reloaded config's limits: open connections meet them at the next sweep, new ones at once
        (a connection's max_header_bytes is fixed when it opens)."""
        self.limits = limits

    def accept(self, conn: Connection, transport: asyncio.Transport) -> bool:
        """A new connection: counted and set up (no Nagle delay), or refused beyond max_connections
        (aborted here, without a FIN handshake's worth of state)."""
        if self.draining or len(self.connections) >= self.limits.max_connections:
            self._rejected["max_connections"].inc()
            transport.abort()
            return False
        self.connections.add(conn)
        self.metrics.open_connections.inc()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True

    def release(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.open_connections.dec()

    def close(self, conn: Connection, transport: asyncio.Transport) -> None:
        """Close `conn` once what is buffered is sent, and stop counting it. A client that never takes
        those bytes would hold the socket (and its file descriptor) for ever, untracked: cut it after
        server.send_timeout."""
        transport.close()
        if transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(self.limits.send_timeout, transport.abort)
        self.release(conn)

    def abort(self, conn: Connection, transport: asyncio.Transport) -> None:
        """Cut `conn` at once (nothing buffered is sent) and stop counting it."""
        transport.abort()
        self.release(conn)

    def count_expired(self, reason: str) -> None:
        self._rejected[reason].inc()

    def begin_request(self) -> bool:
        """Admit one request into the request path, or False to shed it (server.max_inflight)."""
        limit = self.limits.max_inflight
        if limit and self.inflight >= limit:
            self.metrics.requests_shed.inc()
            return False
        self.inflight += 1
        return True

    def end_request(self) -> None:
        self.inflight -= 1

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_sweep_interval(self.limits))  # read each time: limits follow reloads
            now = loop.time()
            self.date = _http_date()
            for i, conn in enumerate(list(self.connections), 1):
                conn.expire(now)
                if i % SWEEP_BATCH == 0:
                    # Thousands of connections may expire together (a slowloris wave): let the
                    # requests of everyone else through between batches.
                    await asyncio.sleep(0)

    async def drain(self, grace: float) -> None:
        """Stop: idle connections close now, busy ones after their response; whatever is left
        after `grace` seconds is cut."""
        self.draining = True
        for conn in list(self.connections):
            conn.shut_down()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


def _sweep_interval(limits: Limits) -> float:
    shortest = min(limits.header_timeout, limits.idle_timeout, limits.send_timeout, limits.body_timeout)
    return max(min(SWEEP_MAX_SECONDS, shortest / 10), 0.01)


def _http_date() -> bytes:
    """The Date header line (RFC 9110 §6.6.1), refreshed by the sweep: one format a second, not one a request."""
    return b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
