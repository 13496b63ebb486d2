"""The proxy port's HTTP/1.1 server protocol: framing on aiohttp's C parser (llhttp), nothing of tokens.

One `Http1Connection` per TCP (or TLS) connection. Bytes go through llhttp, which
refuses ambiguous framing (Content-Length with Transfer-Encoding, two lengths, an
unknown transfer coding, obsolete line folding, whitespace before a colon, NUL in
a value: RFC 9112 §6.3, §5.2) before anything reaches the request path. Each
complete head becomes an `Http1Request` (edge.ServerRequest) handed to the
request path; requests on one connection are answered strictly in order
(pipelining, RFC 9112 §9.3.2) by one task that lives only while there is work.

Bodies stream both ways with backpressure: the parser's body buffer pauses
reading from the socket when full, and writes wait while the socket's send
buffer is full (pause_writing/resume_writing). A response of unknown length is
chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones. A request
whose body was not read to its end when the response is done closes the
connection: the rest of that body can never be taken for the next request.

Deadlines are kept by the edge's sweep (edge.Edge), not by timers: a connection
whose request head has started must complete it within server.header_timeout
(else 408 and close); one waiting for a request with nothing of it sent is
closed after server.idle_timeout. While the request path waits on the client, the
sweep watches that it moves: a response write the client takes no byte of for
server.send_timeout cuts the connection (recorded 499); a request body no byte of
which arrives for server.body_timeout while the request path awaits it is
answered 408 (or cut, once the answer has begun), and the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy

from gateway.edge import (
    BODY_TIMEOUT,
    BODY_TIMEOUT_ANSWERING,
    SEND_TIMEOUT,
    Deadline,
    Edge,
    Stall,
    peer_address,
    unsent_bytes,
)
from gateway.local_reply import Decision, LocalReply, reply

log = logging.getLogger("gateway.edge")

BODY_BUFFER = 64 * 1024  # the parser pauses reading once a request body buffers past twice this
MAX_PIPELINED = 16  # requests parsed ahead of the one being answered before reading pauses
_IDLE, _HEAD, _BUSY, _CLOSED = 0, 1, 2, 3  # what the connection is waiting for
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Failure:
    """A request that could not be parsed: answered in its turn, then the connection closes."""

    __slots__ = ("decision",)

    def __init__(self, decision: Decision) -> None:
        self.decision = decision


class Http1Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order, keep alive or close."""

    __slots__ = (
        "_body_stall", "_body_wait", "_closing", "_current", "_drain_waiter", "_edge", "_loop", "_parser", "_queue",
        "_reading_paused", "_resumes", "_send_stall", "_since", "_state", "_task", "_tunnel", "_write_paused", "peer",
        "scheme", "transport",
    )

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser: Any = None
        # Parsed requests not yet answered, each admitted (counted in flight) or to be shed.
        self._queue: deque[tuple[Any, StreamReader, bool] | _Failure] = deque()
        self._task: asyncio.Task[None] | None = None
        self._state = _IDLE
        self._since = 0.0
        self._closing = False  # no further request is read; close once the queue is answered
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._resumes = 0  # resume_writing calls: the client took bytes
        self._current: Http1Request | None = None  # the request the request path is answering
        self._body_wait: StreamReader | None = None  # its body, while the request path awaits bytes of it
        self._send_stall = Stall()
        self._body_stall = Stall()
        self._tunnel: _Http1Tunnel | None = None
        self.peer: str | None = None
        self.scheme = "http"

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self._edge.accept(self, transport):
            self._state = _CLOSED
            return
        self.peer = peer_address(transport)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        max_header_bytes = self._edge.limits.max_header_bytes
        self._parser = HttpRequestParser(
            cast(Any, self), self._loop, BODY_BUFFER, max_line_size=max_header_bytes, max_field_size=max_header_bytes,
            auto_decompress=False,  # bodies pass through as sent
        )
        self._since = self._loop.time()

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.feed(data)
            return
        if self._state == _CLOSED or self._closing:
            return
        if self._state == _IDLE and data:
            self._state = _HEAD
            self._since = self._loop.time()
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._refuse(Decision.HEADERS_TOO_LARGE if isinstance(exc, LineTooLong) else Decision.BAD_REQUEST)
            return
        if messages:
            self._state = _BUSY
            # Admission is decided as the head arrives, so requests waiting for the event loop
            # count as in flight: under CPU overload the queue is here, and it stays bounded.
            edge = self._edge
            for message, payload in messages:
                if edge.begin_request():
                    self._queue.append((message, payload, True))
                elif self._task is None and not self._queue:
                    self._shed(message, payload)  # nothing ahead of it on this connection: at once
                else:
                    self._queue.append((message, payload, False))
            if not self._queue:  # all shed at once
                if upgraded:
                    self.close()
                elif self._state != _CLOSED:
                    self._state = _IDLE
                    self._since = self._loop.time()
                return
            if self._task is None:
                self._task = self._loop.create_task(self._serve())
            if len(self._queue) >= MAX_PIPELINED:
                self._pause_transport()
        if upgraded:
            # Whatever follows the upgrade request is the upgraded protocol's, not HTTP/1.1.
            self._closing = True
            self._tunnel = _Http1Tunnel(self, tail)

    def eof_received(self) -> bool | None:
        if self._tunnel is not None:
            self._tunnel.feed_eof()
            return True  # keep our side open to finish the other direction
        try:
            self._parser.feed_eof()
        except HttpProcessingError:
            pass  # a body cut short: its reader sees the connection go
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._state = _CLOSED
        self._edge.release(self)
        if self._tunnel is not None:
            self._tunnel.feed_eof()
        if self._task is not None:
            # The client went away: whatever it asked for is no longer wanted (the upstream
            # exchange is cancelled too, and the request path records 499).
            self._task.cancel()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("client closed the connection"))
        self._drain_waiter = None
        self._release_queued()

    def _release_queued(self) -> None:
        """Requests parsed but never answered (the client left): no longer in flight."""
        for item in self._queue:
            if not isinstance(item, _Failure) and item[2]:
                self._edge.end_request()
        self._queue.clear()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resumes += 1
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- flow control asked for by the parser's body buffer (aiohttp StreamReader) ----------

    @property
    def connected(self) -> bool:
        return self._state != _CLOSED

    def pause_reading(self) -> None:
        self._parser.pause_reading()
        self._pause_transport()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if resume_parser and self._tunnel is None:
            self.data_received(b"")  # parse what the parser held back when it paused
        if not self._reading_paused and len(self._queue) < MAX_PIPELINED:
            self._resume_transport()

    def _pause_transport(self) -> None:
        self._reading_paused = True
        if self.transport is not None and self._state != _CLOSED:
            self.transport.pause_reading()

    def _resume_transport(self) -> None:
        self._reading_paused = False
        if self.transport is not None and self._state != _CLOSED and not self.transport.is_reading():
            self.transport.resume_reading()

    async def drain(self) -> None:
        if self._state == _CLOSED:
            raise ConnectionResetError("client closed the connection")
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    # -- deadlines and shutdown (called by the edge) -----------------------------------------

    def expire(self, now: float) -> None:
        state = self._state
        if state == _HEAD and now - self._since >= self._edge.limits.header_timeout:
            self._edge.count_expired("header_timeout")
            self._refuse(Decision.HEAD_TIMEOUT)
        elif state == _IDLE and now - self._since >= self._edge.limits.idle_timeout:
            self._edge.count_expired("idle_timeout")
            self.close()
        elif state == _BUSY:
            self._expire_waits(now)

    def _expire_waits(self, now: float) -> None:
        """The request path waits on the client: cut it if the client has stopped moving (progress
        resets the clock, so a slow but steady client is never cut)."""
        limits = self._edge.limits
        if self._current is not None and self._current.expired is not None:
            return  # cut already, its request still winding down
        if self._drain_waiter is None or self.transport is None:
            self._send_stall.clear()
        elif self._send_stall.seconds(now, self._resumes, unsent_bytes(self.transport)) >= limits.send_timeout:
            self._cut(SEND_TIMEOUT)
            return
        body = self._body_wait
        if body is None:
            self._body_stall.clear()
        elif self._body_stall.seconds(now, body.total_bytes) >= limits.body_timeout:
            request = self._current
            self._cut(BODY_TIMEOUT if request is not None and not request.response_started else BODY_TIMEOUT_ANSWERING)

    def _cut(self, deadline: Deadline) -> None:
        """Cancel the request path at `deadline`: it answers what it still owes (a 408), then the
        connection closes; with nothing owed the connection is aborted at once (its buffer may never drain)."""
        self._edge.count_expired(deadline.reason)
        request = self._current
        if request is not None:
            request.expired = deadline
            request.keep_alive = False
        if deadline.answer is None or self._task is None:
            self.abort()  # connection_lost cancels the request path's task (recorded 499)
            return
        self._closing = True
        self._task.cancel()

    def shut_down(self) -> None:
        self._closing = True
        if self._task is None and self._tunnel is None:
            self.close()

    def close(self) -> None:
        if self.transport is not None and self._state != _CLOSED:
            self._state = _CLOSED
            self._edge.close(self, self.transport)

    def abort(self) -> None:
        if self.transport is not None:
            self._state = _CLOSED
            self._edge.abort(self, self.transport)

    # -- answering ---------------------------------------------------------------------------

    def _refuse(self, decision: Decision) -> None:
        """HTTP the parser cannot take (or a head too slow): answered after what is queued, then close."""
        self._closing = True
        self._pause_transport()
        if self._task is None and not self._queue:  # nothing ahead of it: at once
            self._answer_and_close(decision)
            return
        self._state = _BUSY
        self._queue.append(_Failure(decision))
        if self._task is None:
            self._task = self._loop.create_task(self._serve())

    def _answer_and_close(self, decision: Decision) -> None:
        self._edge.record_refused(decision)
        _write_local(self, reply(decision, "-"), keep_alive=False, head_only=False)
        self.close()

    def _shed(self, message: Any, payload: StreamReader) -> None:
        """503 at once (server.max_inflight): the request path never sees the request."""
        self._edge.record_refused(Decision.OVERLOADED)
        request = Http1Request(self, message, payload)
        request.send_local(reply(Decision.OVERLOADED, "-"))
        if not request.keep_alive or not payload.is_eof():
            self.close()

    async def _serve(self) -> None:
        """Answer queued requests in order; the task ends when the queue is empty."""
        edge = self._edge
        queue = self._queue
        try:
            while queue and self._state != _CLOSED:
                item = queue.popleft()
                if isinstance(item, _Failure):
                    self._answer_and_close(item.decision)
                    return
                message, payload, admitted = item
                request = Http1Request(self, message, payload)
                if not admitted:
                    self._shed(message, payload)
                    if self._state == _CLOSED:
                        return
                    continue
                else:
                    self._current = request
                    try:
                        await edge.handler(request)
                    except asyncio.CancelledError:
                        if request.expired is None or self._state == _CLOSED:
                            raise
                        # Cut at a deadline (_cut): the request path answered what it owed; close below.
                    except Exception:
                        log.error("internal error while handling a request", exc_info=True)
                        if not request.response_started and self._state != _CLOSED:
                            request.keep_alive = False
                            request.send_local(reply(Decision.INTERNAL_ERROR, "-"))
                        else:
                            self.abort()
                            return
                    finally:
                        edge.end_request()
                        self._current = self._body_wait = None
                if self._tunnel is not None:
                    self.close()  # an upgrade request: refused, or its tunnel has ended
                    return
                if not request.response_done:
                    self.abort()  # the request path left the response unfinished: never reuse the connection
                    return
                if not request.keep_alive or not payload.is_eof():
                    self.close()
                    return
            if self._closing:
                self.close()
        finally:
            self._task = None
            if self._state == _BUSY and not queue:
                self._state = _IDLE
                self._since = self._loop.time()
                if self._reading_paused and self.transport is not None:
                    self._resume_transport()


def _write_local(conn: Http1Connection, local: LocalReply, *, keep_alive: bool, head_only: bool) -> None:
    """A local reply as one write: the prebuilt head, this request's id, length, date, framing, body."""
    body = local.body
    prepared = local.prepared
    head = b"".join((
        prepared.http1_head,
        b"X-Request-Id: ", local.request_id.encode(), b"\r\n",
        b"Content-Length: %d\r\n" % len(body),
        conn._edge.date,
        b"\r\n" if keep_alive else b"Connection: close\r\n\r\n",
    ))
    assert conn.transport is not None
    if conn._state != _CLOSED:
        conn.transport.write(head if head_only else head + body)


class Http1Request:
    """One HTTP/1.x request: the head as plain values, the body as a stream, and the answer's writer."""

    __slots__ = (
        "_chunked", "_conn", "body", "content_length", "expired", "has_body", "headers", "is_http11", "keep_alive",
        "method", "raw_path", "remote", "response_done", "response_started", "scheme", "transport",
    )

    def __init__(self, conn: Http1Connection, message: Any, payload: StreamReader) -> None:
        self._conn = conn
        self.method: str = message.method
        self.raw_path: str = message.path
        self.headers: CIMultiDictProxy[str] = message.headers
        self.is_http11 = message.version == (1, 1)
        self.keep_alive = not message.should_close and not conn._closing
        self.remote = conn.peer
        self.scheme = conn.scheme
        self.transport = conn.transport
        self.has_body = payload is not EMPTY_PAYLOAD
        self.body: _Http1Body | StreamReader = _Http1Body(conn, payload) if self.has_body else payload
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length is not None and not message.chunked else None
        self.response_started = False
        self.response_done = False
        self.expired: Deadline | None = None
        self._chunked = False

    def send_local(self, local: LocalReply) -> None:
        self.response_started = self.response_done = True
        _write_local(self._conn, local, keep_alive=self.keep_alive, head_only=self.method == "HEAD")

    def send_continue(self) -> None:
        if self.is_http11 and self.headers.get("Expect", "").lower() == "100-continue":
            transport = self._conn.transport
            if transport is not None and not transport.is_closing():
                transport.write(_CONTINUE)

    def _head(self, status: int, reason: str, headers: list[tuple[str, str]], extra: bytes) -> bytes:
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
        return f"HTTP/1.1 {status} {reason}\r\n{fields}".encode("utf-8", "surrogateescape") + extra + (
            b"\r\n" if self.keep_alive else b"Connection: close\r\n\r\n"
        )

    async def send_response(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.response_started = True
        data = self._head(status, reason, headers, b"")
        self._write(data if self.method == "HEAD" else data + body)
        self.response_done = True
        await self._conn.drain()

    async def start_response(
        self, status: int, reason: str, headers: list[tuple[str, str]], *, chunked: bool
    ) -> None:
        self.response_started = True
        extra = b""
        if chunked and self.method != "HEAD":
            if self.is_http11:
                self._chunked = True
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # HTTP/1.0 has no chunked coding: the body ends with the connection
        self._write(self._head(status, reason, headers, extra))

    async def write(self, data: bytes) -> None:
        if not data or self.method == "HEAD":
            return
        self._write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self._conn.drain()

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        if self._chunked:
            # RFC 9112 §7.1.2: trailers ride the last chunk; without chunked framing they are dropped.
            fields = "".join(f"{name}: {value}\r\n" for name, value in trailers or ())
            self._write(b"0\r\n" + fields.encode("utf-8", "surrogateescape") + b"\r\n")
        self.response_done = True
        await self._conn.drain()

    def _write(self, data: bytes) -> None:
        transport = self._conn.transport
        if transport is None or self._conn._state == _CLOSED:
            raise ConnectionResetError("client closed the connection")
        transport.write(data)

    def abort(self) -> None:
        self._conn.abort()

    def upgrade(self) -> _Http1Tunnel:
        tunnel = self._conn._tunnel
        if tunnel is None:  # the parser did not see an upgrade request: nothing to switch to
            raise ConnectionResetError("not an upgrade request")
        self.response_done = True
        tunnel.start()
        return tunnel


class _Http1Body:
    """A request body as the request path reads it: each wait for the client's bytes is shown to the
    sweep (server.body_timeout); a wait before the request path asks (100-continue) is not the client's."""

    __slots__ = ("_conn", "_payload")

    def __init__(self, conn: Http1Connection, payload: StreamReader) -> None:
        self._conn = conn
        self._payload = payload

    async def read(self, n: int = -1) -> bytes:
        self._conn._body_wait = self._payload
        try:
            return await self._payload.read(n)
        finally:
            self._conn._body_wait = None

    async def readexactly(self, n: int) -> bytes:
        self._conn._body_wait = self._payload
        try:
            return await self._payload.readexactly(n)
        finally:
            self._conn._body_wait = None

    def at_eof(self) -> bool:
        return self._payload.at_eof()


class _Http1Tunnel:
    """The client's side of an upgraded connection: bytes in (with backpressure) and out."""

    __slots__ = ("_buffer", "_conn", "_eof", "_started", "_waiter")

    HIGH_WATER = 256 * 1024

    def __init__(self, conn: Http1Connection, tail: bytes) -> None:
        self._conn = conn
        self._buffer: deque[bytes] = deque([tail] if tail else [])
        self._eof = False
        self._started = False
        self._waiter: asyncio.Future[None] | None = None
        conn._pause_transport()  # nothing is read until the request path switches protocols

    def start(self) -> None:
        self._started = True
        self._conn._resume_transport()

    def feed(self, data: bytes) -> None:
        if data:
            self._buffer.append(data)
            if sum(map(len, self._buffer)) > self.HIGH_WATER:
                self._conn._pause_transport()
            self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._buffer and not self._eof:
            self._waiter = self._conn._loop.create_future()
            await self._waiter
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if self._started and self._conn._reading_paused:
                self._conn._resume_transport()
            return data
        return b""

    async def write(self, data: bytes) -> None:
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client closed the connection")
        transport.write(data)
        await self._conn.drain()

    def close(self) -> None:
        self._conn.close()
