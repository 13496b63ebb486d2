"""The proxy port's HTTP/2 server protocol (RFC 9113) on python-hyper's sans-IO `h2` state machine; nothing of tokens.

One `Http2Connection` per connection that opened with the HTTP/2 preface (h2c with
prior knowledge, RFC 9113 §3.3) or negotiated `h2` by ALPN under TLS. Each stream
becomes an `Http2Stream` (edge.ServerRequest) handed to the same request path as
an HTTP/1.1 request: header names arrive lower-case (h2 refuses others), the
pseudo-headers become the method and target and never ordinary headers, and
`:authority` stands in for a missing Host (RFC 9113 §8.3.1).

Limits, each a counted connection error (gateway_http2_errors_total{reason}):
SETTINGS_MAX_CONCURRENT_STREAMS bounds open streams and, separately, the request
path's tasks (a reset stream's task still counts until it has ended); a field line
longer than server.max_header_bytes is 431 like HTTP/1.1, and a whole header list
past the advertised SETTINGS_MAX_HEADER_LIST_SIZE ends the connection (the HPACK
state cannot be kept); header blocks split over more than h2's 64 CONTINUATION
frames end it (CONTINUATION flood); clients resetting streams before their answer
faster than RESET_BUDGET a second, or more than RESET_BUDGET times in all when
that is over half the streams they opened (rapid reset, CVE-2023-44487; the
second rule, Envoy's "premature reset" ratio, holds however slowly we read), or
sending more than CONTROL_BUDGET SETTINGS or PING frames a second get GOAWAY
ENHANCE_YOUR_CALM.
Request bodies are acknowledged (WINDOW_UPDATE) only as the request path reads them,
so what one connection buffers is bounded by its flow-control window.

Clients that stop moving (the edge's sweep, gateway_connections_rejected_total{reason}):
a stream whose own window stays shut for server.send_timeout with an answer waiting
is reset (RST_STREAM CANCEL); if the connection's window is the shut one, GOAWAY
ends the connection, and if the client takes nothing off the socket at all it is cut.
A stream whose body the request path awaits and no byte of which arrives for
server.body_timeout is answered 408 (or reset, once its answer has begun). Each such
stream's request is cancelled (recorded 499, or 408) with its upstream exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import DenialOfServiceError, FlowControlError, H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import hpack_cache
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
from gateway.grpc import is_grpc
from gateway.h2_io import H2Endpoint
from gateway.http1 import Http1Connection
from gateway.local_reply import Decision, LocalReply, reply

log = logging.getLogger("gateway.edge")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
MAX_CONCURRENT_STREAMS = 100
STREAM_WINDOW = 256 * 1024  # what one stream's body may buffer before the request path reads it
CONNECTION_WINDOW = 1024 * 1024  # what the whole connection may buffer
RESET_BUDGET = 2 * MAX_CONCURRENT_STREAMS  # client resets of unanswered streams a second (CVE-2023-44487)
CONTROL_BUDGET = 100  # SETTINGS or PING frames a second: each makes us write an ACK
ERROR_REASONS = (
    "rapid_reset", "continuation_flood", "settings_flood", "ping_flood", "header_list_size", "protocol_error",
)

hpack_cache.install()  # a client's repeated token is Huffman-decoded once


class Http2Connection(H2Endpoint):
    """One HTTP/2 client connection: frames in, a task per stream, frames out with flow control."""

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self.peer: str | None = None
        self.scheme = "http"
        super().__init__(H2Connection(
            # What we send is checked before it reaches h2 (lower-case names, no connection-specific
            # fields; values came through a validating parser or our own table): h2 need not again.
            H2Configuration(
                client_side=False, header_encoding=None, validate_inbound_headers=True,
                validate_outbound_headers=False, normalize_outbound_headers=False,
            )
        ))
        self._header_list_limit = max(65536, 4 * edge.limits.max_header_bytes)
        self._streams: dict[int, Http2Stream] = {}
        self._tasks = 0  # request-path tasks not yet ended (a reset stream's may still be winding down)
        self._draining = False  # GOAWAY sent: no new streams; close once the open ones are answered
        self._since = 0.0  # when the connection last had no stream open
        self._window_start = 0.0
        self._resets = self._pings = self._settings = 0  # within the current second
        self._streams_opened = self._early_resets = 0  # over the connection's life
        self._send_stall = Stall()  # the socket: the client takes nothing off it
        self._errors = {reason: edge.metrics.http2_errors.labels(reason) for reason in ERROR_REASONS}

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if not self._edge.accept(self, transport):
            self.closed = True
            return
        self.peer = peer_address(transport)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        h2 = self._h2
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: self._header_list_limit,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # Enforced from the first frame, not only once the client acknowledged our SETTINGS.
        h2.decoder.max_header_list_size = self._header_list_limit
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._since = self._window_start = self._loop.time()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self._h2.receive_data(data)
        except DenialOfServiceError:
            self._fail("header_list_size", ErrorCodes.ENHANCE_YOUR_CALM)
            return
        except FlowControlError:
            self._fail("protocol_error", ErrorCodes.FLOW_CONTROL_ERROR)
            return
        except ProtocolError as exc:
            flood = "continuation" in str(exc).lower()
            self._fail("continuation_flood" if flood else "protocol_error", ErrorCodes.PROTOCOL_ERROR)
            return
        for event in events:
            if isinstance(event, DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is None:  # answered and forgotten: give the window back at once
                    self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    stream.body.feed(event.data, event.flow_controlled_length)
                if event.stream_ended is not None and stream is not None:
                    stream.body.feed_eof()
            elif isinstance(event, RequestReceived):
                self._open_stream(event)
            elif isinstance(event, StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.body.feed_eof()
            elif isinstance(event, StreamReset):
                self._client_reset(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, RemoteSettingsChanged):
                self._settings += 1
                self._window_opened(0)  # INITIAL_WINDOW_SIZE may have grown every stream's window
            elif isinstance(event, PingReceived):
                self._pings += 1
            elif isinstance(event, ConnectionTerminated):
                # The client's GOAWAY: h2 sends nothing after it, so what is open is abandoned.
                self._abandon_streams()
                self.close()
            if self.closed:
                return
        if not self._within_budgets():
            return
        self._flush()
        if self._draining and not self._streams:
            self.close()

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close (streams still open see the connection go)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._edge.release(self)
        self._abandon_streams()
        self._fail_waiters(ConnectionResetError("client closed the connection"))

    def _abandon_streams(self) -> None:
        """The client left: every open stream's request-path task is cancelled (recorded 499)."""
        for stream in list(self._streams.values()):
            stream.lost()
        self._streams.clear()

    # -- deadlines and shutdown (called by the edge) -----------------------------------------

    def expire(self, now: float) -> None:
        if self.closed:
            return
        if self._streams:
            self._expire_waits(now)
        elif now - self._since >= self._edge.limits.idle_timeout:
            self._edge.count_expired("idle_timeout")
            self._goodbye(ErrorCodes.NO_ERROR)

    def _expire_waits(self, now: float) -> None:
        """Streams waiting on a client that stopped moving (progress restarts each clock): the
        socket, then the flow-control windows, then request bodies."""
        send_timeout = self._edge.limits.send_timeout
        if not self._drain_waiters or self.transport is None:
            self._send_stall.clear()
        elif self._send_stall.seconds(now, self._resumes, unsent_bytes(self.transport)) >= send_timeout:
            self._cut_connection(abort=True)  # nothing more can reach it, not even a GOAWAY
            return
        for stream_id, since in list(self._stalled.items()):
            if now - since < send_timeout or stream_id not in self._stalled:
                continue  # moving, or gone with a stream cut just now
            if stream_id == 0:
                self._cut_connection(abort=False)
                return
            stream = self._streams.get(stream_id)
            # With the connection's window open, the stream's own is the one shut.
            if stream is not None and self._h2.outbound_flow_control_window > 0:
                self._cut_stream(stream, SEND_TIMEOUT)
        body_timeout = self._edge.limits.body_timeout
        for stream in list(self._streams.values()):
            body = stream.body
            # Cut already (its request still winding down), or a gRPC call: a streaming call's client
            # may rightly be silent for long, and grpc-timeout is its deadline.
            if stream.expired is not None or stream.grpc:
                continue
            if not body.awaited() or not self._client_may_send(stream.stream_id):
                body.stall.clear()
            elif body.stall.seconds(now, body.received) >= body_timeout:
                self._cut_stream(stream, BODY_TIMEOUT_ANSWERING if stream.response_started else BODY_TIMEOUT)

    def _client_may_send(self, stream_id: int) -> bool:
        """Whether the windows we gave let the client send on `stream_id`: other streams' unread
        bodies may hold the connection's, and that wait is ours, not the client's."""
        try:
            return self._h2.remote_flow_control_window(stream_id) > 0
        except H2Error:
            return False

    def _cut_stream(self, stream: Http2Stream, deadline: Deadline) -> None:
        """Cancel one stream's request at `deadline`: it answers what it still owes (a 408; the unread
        body then resets the stream), or the stream is reset at once. Other streams go on."""
        self._edge.count_expired(deadline.reason)
        stream.expired = deadline
        if deadline.answer is not None and stream.task is not None:
            stream.task.cancel()
            return
        self._send_reset(stream.stream_id, ErrorCodes.CANCEL)
        self._drop(stream)
        self._flush()

    def _cut_connection(self, *, abort: bool) -> None:
        """The client takes nothing on the whole connection: every stream's request is cancelled
        (recorded 499); GOAWAY when the client still reads the socket, else the connection is cut."""
        self._edge.count_expired(SEND_TIMEOUT.reason)
        for stream in self._streams.values():
            stream.expired = SEND_TIMEOUT
        self._abandon_streams()
        if abort:
            self.abort()
        else:
            self._goodbye(ErrorCodes.CANCEL)

    def shut_down(self) -> None:
        """GOAWAY naming the last stream we took (RFC 9113 §6.8): open streams finish, no new ones start."""
        if self.closed or self._draining:
            return
        self._draining = True
        self._write_now()  # what h2 has queued goes before our GOAWAY
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._h2.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        assert self.transport is not None
        self.transport.write(frame.serialize())
        if not self._streams:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._write_now()  # frames still queued (a GOAWAY, a last answer) go first
            self.closed = True
            self._edge.close(self, self.transport)

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self._edge.abort(self, self.transport)

    # -- streams -----------------------------------------------------------------------------

    def _open_stream(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        self._streams_opened += 1
        if self._draining or self._tasks >= MAX_CONCURRENT_STREAMS:
            # h2 already bounds open streams; this bounds the work of reset ones still winding down.
            self._send_reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        stream = Http2Stream(self, stream_id, event.headers, ended=event.stream_ended is not None)
        self._streams[stream_id] = stream
        refused = Decision.HEADERS_TOO_LARGE if stream.too_large else None
        if refused is None and not self._edge.begin_request():
            refused = Decision.OVERLOADED
        if refused is not None:  # answered here: the request path never sees it
            self._edge.record_refused(refused)
            local = reply(refused, "-")
            try:
                stream.send_local(local.for_grpc() if stream.grpc else local)
            except H2Error:
                pass  # a later frame of the same read already reset the stream: no one to answer
            self._forget(stream)
            return
        self._tasks += 1
        stream.task = self._loop.create_task(self._serve(stream))
        # A done callback, not a `finally`: a task cancelled before its first step never runs its body.
        stream.task.add_done_callback(lambda _: self._served(stream))

    async def _serve(self, stream: Http2Stream) -> None:
        try:
            await self._edge.handler(stream)
        except asyncio.CancelledError:
            pass  # the client reset the stream or left: the request path recorded 499
        except Exception:
            log.error("internal error while handling a request", exc_info=True)
            if not stream.response_started and not stream.reset:
                try:
                    stream.send_local(reply(Decision.INTERNAL_ERROR, "-"))
                except (H2Error, ConnectionError):
                    pass  # the stream could take no answer: reset below

    def _served(self, stream: Http2Stream) -> None:
        self._edge.end_request()
        self._tasks -= 1
        if not stream.response_done and not stream.reset:
            stream.abort()  # never let a truncated answer look complete
        self._forget(stream)

    def _forget(self, stream: Http2Stream) -> None:
        """The answer is complete: a body the client is still sending is not wanted (RFC 9113 §8.1)."""
        if self._streams.pop(stream.stream_id, None) is None:
            return
        self._forget_window(stream.stream_id)
        if not stream.body.ended and not stream.reset and not self.closed:
            self._send_reset(stream.stream_id, ErrorCodes.NO_ERROR)
        self._give_back(stream.body.unread_window())
        if not self._streams:
            self._since = self._loop.time()
            if self._draining:
                self.close()
        self._flush()

    def _client_reset(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or not stream.response_done:
            self._resets += 1  # a stream cancelled before its answer (refused ones too): rapid reset's shape
            self._early_resets += 1
        if stream is not None:
            self._drop(stream)

    def _drop(self, stream: Http2Stream) -> None:
        """A stream reset before its answer ended (by either side): its window back, its request cancelled."""
        self._streams.pop(stream.stream_id, None)
        self._forget_window(stream.stream_id)
        self._give_back(stream.body.unread_window())
        stream.lost()
        if not self._streams:
            self._since = self._loop.time()

    def _within_budgets(self) -> bool:
        """The flood shapes: too many resets, SETTINGS or PINGs within a second, or a life of mostly resets, end it."""
        mostly_reset = self._early_resets > RESET_BUDGET and 2 * self._early_resets > self._streams_opened
        if self._resets > RESET_BUDGET or mostly_reset:
            self._fail("rapid_reset", ErrorCodes.ENHANCE_YOUR_CALM)
        elif self._settings > CONTROL_BUDGET:
            self._fail("settings_flood", ErrorCodes.ENHANCE_YOUR_CALM)
        elif self._pings > CONTROL_BUDGET:
            self._fail("ping_flood", ErrorCodes.ENHANCE_YOUR_CALM)
        now = self._loop.time()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._resets = self._pings = self._settings = 0
        return not self.closed

    def _fail(self, reason: str, code: ErrorCodes) -> None:
        self._errors[reason].inc()
        self._goodbye(code)

    def _goodbye(self, code: ErrorCodes) -> None:
        try:
            self._h2.close_connection(code)
            self._flush()
        except ProtocolError:
            pass
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def _send_reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except (StreamClosedError, ProtocolError):
            pass

    def _give_back(self, length: int) -> None:
        if length and not self.closed:
            self._h2.increment_flow_control_window(length)

    def stream_open(self, stream_id: int) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and not stream.reset


def _decode(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in headers]


class _StreamBody:
    """One stream's request body as it arrives; its window is given back as the request path reads."""

    __slots__ = ("_buffer", "_conn", "_error", "_stream_id", "_unacked", "_waiter", "ended", "received", "stall")

    def __init__(self, conn: Http2Connection, stream_id: int, ended: bool) -> None:
        self._conn = conn
        self._stream_id = stream_id
        self._buffer: deque[tuple[bytes, int]] = deque()  # data, and the window it took (padding counts)
        self._unacked = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.ended = ended
        self.received = 0  # bytes of body so far: progress, for server.body_timeout
        self.stall = Stall()

    def feed(self, data: bytes, window: int) -> None:
        self._buffer.append((data, window))
        self._unacked += window
        self.received += len(data)
        self._wake()

    def awaited(self) -> bool:
        """Whether the request path is waiting for bytes of this body now."""
        return self._waiter is not None and not self._waiter.done()

    def feed_eof(self) -> None:
        self.ended = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._wake()

    def unread_window(self) -> int:
        """The window of data never read (the stream is gone): the connection's share goes back."""
        n, self._unacked = self._unacked, 0
        self._buffer.clear()
        return n

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def at_eof(self) -> bool:
        return self.ended and not self._buffer

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self.ended:
                return b""
            self._waiter = self._conn._loop.create_future()
            await self._waiter
        data, window = self._buffer.popleft()
        if 0 <= n < len(data):
            rest = data[n:]
            data = data[:n]
            self._buffer.appendleft((rest, 0))  # the whole window is given back with the first part
        self._ack(window)
        return data

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = await self.read(n - got)
            if not piece:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _ack(self, window: int) -> None:
        conn = self._conn
        if window and not conn.closed and self._stream_id in conn._streams:
            self._unacked -= window
            conn._h2.acknowledge_received_data(window, self._stream_id)
            conn._flush()


class Http2Stream:
    """One HTTP/2 request: the head as plain values, the body as a stream, and the answer's writer."""

    __slots__ = (
        "_conn", "body", "content_length", "expired", "grpc", "has_body", "headers", "method", "raw_path", "remote",
        "reset", "response_done", "response_started", "scheme", "stream_id", "task", "too_large", "transport",
    )

    def __init__(self, conn: Http2Connection, stream_id: int, raw: list[tuple[bytes, bytes]], *, ended: bool) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.method = "GET"
        self.raw_path = ""
        authority: str | None = None
        headers: CIMultiDict[str] = CIMultiDict()
        limit = conn._edge.limits.max_header_bytes
        self.too_large = False
        for name, value in _decode(raw):
            if len(name) + len(value) > limit:
                self.too_large = True  # the counterpart of HTTP/1.1's over-long header line: 431
            if name.startswith(":"):  # pseudo-headers are the request line, never forwarded as headers
                if name == ":method":
                    self.method = value
                elif name == ":path":
                    self.raw_path = value
                elif name == ":authority":
                    authority = value
                continue
            headers.add(name, value)
        if authority is not None and "host" not in headers:
            headers["host"] = authority  # RFC 9113 §8.3.1: :authority stands in for Host
        self.headers = CIMultiDictProxy(headers)
        self.grpc = is_grpc(self.headers)
        self.remote = conn.peer
        self.scheme = conn.scheme
        self.transport: Any = conn.transport
        self.body = _StreamBody(conn, stream_id, ended)
        self.has_body = not ended
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.response_started = False
        self.response_done = False
        self.reset = False
        self.expired: Deadline | None = None
        self.task: asyncio.Task[None] | None = None

    def lost(self) -> None:
        """The client reset the stream or left: the request path's task is cancelled (recorded 499)."""
        self.reset = True
        self.body.fail(ConnectionResetError("the client reset the stream"))
        if self.task is not None:
            self.task.cancel()

    # -- answering ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.reset or self._conn.closed:
            raise ConnectionResetError("client closed the stream")

    def _send_headers(self, status: int, headers: list[tuple[str, str]], *, end: bool) -> None:
        self._check()
        fields: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
        for name, value in headers:
            lower = name.lower()
            if lower in _CONNECTION_SPECIFIC:
                continue
            field = (lower.encode("latin-1"), value.encode("utf-8", "surrogateescape"))
            fields.append(NeverIndexedHeaderTuple(*field) if lower in _ONCE_ONLY else field)
        self._conn._h2.send_headers(self.stream_id, fields, end_stream=end)
        self._conn._flush()

    def send_local(self, local: LocalReply) -> None:
        self.response_started = self.response_done = True
        if self.reset or self._conn.closed:
            return
        body = b"" if self.method == "HEAD" else local.body
        headers = [*local.headers(), ("content-length", str(len(local.body)))]
        self._send_headers(local.status, headers, end=not body)
        if not body:
            return
        conn = self._conn
        if conn._h2.local_flow_control_window(self.stream_id) < len(body):
            # A client whose window cannot take a few hundred bytes: no answer is worth waiting for.
            self.abort()
            return
        conn._h2.send_data(self.stream_id, body, end_stream=True)
        conn._flush()

    def send_continue(self) -> None:
        """Nothing: an HTTP/2 client that waits for 100 (rare) gets the final answer instead."""

    async def send_response(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.response_started = True
        if self.method == "HEAD" or not body:
            self._send_headers(status, headers, end=True)
        else:
            self._send_headers(status, headers, end=False)
            await self._conn.send_data(self.stream_id, body, end=True)
        self.response_done = True
        await self._conn.drain()

    async def start_response(
        self, status: int, reason: str, headers: list[tuple[str, str]], *, chunked: bool
    ) -> None:
        self.response_started = True
        self._send_headers(status, headers, end=False)

    async def write(self, data: bytes) -> None:
        if data and self.method != "HEAD":
            await self._conn.send_data(self.stream_id, data, end=False)

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        self._check()
        if trailers:
            self._conn._h2.send_headers(self.stream_id, [(n.lower(), v) for n, v in trailers], end_stream=True)
        else:
            self._conn._h2.end_stream(self.stream_id)
        self._conn._flush()
        self.response_done = True
        await self._conn.drain()

    def abort(self) -> None:
        """Reset this stream only: the connection's other streams carry on."""
        if not self.reset and not self._conn.closed:
            self.reset = True
            self._conn._send_reset(self.stream_id, ErrorCodes.INTERNAL_ERROR)
            self._conn._flush()

    def upgrade(self) -> Any:
        raise ConnectionResetError("HTTP/2 has no Upgrade")  # RFC 9113 §8.6


class Negotiate(asyncio.Protocol):
    """A new connection on a listener with server.http2: which protocol it speaks, then out of the way.

    Under TLS the ALPN result decides (RFC 9113 §3.2); on plain TCP the first bytes do:
    the HTTP/2 preface is h2c with prior knowledge (§3.3), anything else is HTTP/1.1,
    whose connection (and so its limits) starts at once and is dropped for HTTP/2.
    """

    __slots__ = ("_buffer", "_edge", "_http1", "_transport")

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._buffer = b""
        self._http1: Http1Connection | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            protocol: asyncio.Protocol = (
                Http2Connection(self._edge) if ssl_object.selected_alpn_protocol() == "h2" else Http1Connection(self._edge)
            )
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        self._http1 = Http1Connection(self._edge)
        self._http1.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None and self._http1 is not None
        buffered = self._buffer + data
        if len(buffered) < len(PREFACE) and PREFACE.startswith(buffered):
            self._buffer = buffered  # not yet enough to tell
            return
        self._buffer = b""
        protocol: asyncio.Protocol = self._http1
        if buffered.startswith(PREFACE):
            self._edge.release(self._http1)
            protocol = Http2Connection(self._edge)
            self._transport.set_protocol(protocol)
            protocol.connection_made(self._transport)
        else:
            self._transport.set_protocol(protocol)
        protocol.data_received(buffered)

    def eof_received(self) -> bool | None:
        return self._http1.eof_received() if self._http1 is not None else None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._http1 is not None:
            self._http1.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._http1 is not None:
            self._http1.pause_writing()

    def resume_writing(self) -> None:
        if self._http1 is not None:
            self._http1.resume_writing()


# Values that differ on every response: kept out of the HPACK dynamic table (RFC 7541 §6.2.3),
# which then holds only what repeats, and stays short to search.
_ONCE_ONLY = frozenset({"x-request-id", "date", "content-length"})
# RFC 9113 §8.2.2: these never appear in HTTP/2 (h2 refuses to send them).
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
