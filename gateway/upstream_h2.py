"""An HTTP/2 client for the one upstream (upstream.protocol: h2c): few multiplexed connections, streams both ways.

gRPC services speak HTTP/2 only. Requests share a connection up to the upstream's
SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2); beyond it, or once the upstream
sent GOAWAY, another connection opens (server.max_inflight bounds how many). Bodies stream both
ways within the flow-control windows (§5.2): what the upstream sends is
acknowledged only as the client takes it, so a slow client slows its stream and
nothing else; trailers are kept for the client. A connection that fails fails its
open streams (UpstreamProtocolError: 502 before an answer, a reset client stream
after), and the next request opens a fresh one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple

from gateway import hpack_cache
from gateway.h2_io import H2Endpoint
from gateway.upstream_http import UpstreamConnectError, UpstreamConnectTimeout, UpstreamProtocolError

STREAM_WINDOW = 1024 * 1024  # what one response may buffer before its client reads it
CONNECTION_WINDOW = 4 * 1024 * 1024

Fields = list[tuple[str, str]]

hpack_cache.install()  # a client's repeated token is Huffman-decoded once


class UpstreamStream:
    """One exchange on an upstream connection: the response head, its body in pieces, its trailers."""

    __slots__ = ("_buffer", "_conn", "_ended", "_error", "_waiter", "head", "stream_id", "trailers")

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.head: asyncio.Future[Fields] = conn._loop.create_future()  # :status first, then the headers
        self.trailers: Fields = []
        self._buffer: deque[tuple[bytes, int]] = deque()
        self._ended = False
        self._error: UpstreamProtocolError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def ended(self) -> bool:
        """The upstream's side is complete and every piece of it was read."""
        return self._ended and not self._buffer

    def _fail(self, message: str) -> None:
        self._error = UpstreamProtocolError(message)
        if not self.head.done():
            self.head.set_exception(self._error)
            self.head.exception()  # a reader may never come (the client left): no warning for it
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the response body; b"" at its end; UpstreamProtocolError if the stream broke."""
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            self._waiter = self._conn._loop.create_future()
            await self._waiter
        data, window = self._buffer.popleft()
        self._conn.acknowledge(self.stream_id, window)  # taken by the client: the upstream may send more
        return data

    async def send(self, data: bytes, *, end: bool = False) -> None:
        await self._conn.send_data(self.stream_id, data, end=end)

    def end(self) -> None:
        self._conn.end_stream(self.stream_id)

    def cancel(self) -> None:
        """Nobody wants the answer any more (client gone, deadline passed): RST_STREAM CANCEL."""
        self._conn.reset(self.stream_id)


class H2UpstreamConnection(H2Endpoint):
    """One h2c connection to the upstream, many streams on it."""

    def __init__(self) -> None:
        # The request's fields were validated as they arrived from the client (and ours are fixed
        # ASCII): h2 need not check them again on the way out; what the upstream sends is checked.
        super().__init__(H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False,
        )))
        self._streams: dict[int, UpstreamStream] = {}
        self.going_away = False  # GOAWAY received: no new streams here

    @property
    def usable(self) -> bool:
        h2 = self._h2
        return (
            not self.closed
            and not self.going_away
            and h2.open_outbound_streams < h2.remote_settings.max_concurrent_streams
        )

    @property
    def idle(self) -> bool:
        return not self._streams

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        h2 = self._h2
        h2.local_settings = Settings(
            client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW, SettingCodes.ENABLE_PUSH: 0}
        )
        h2.initiate_connection()  # the preface, then these settings
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except H2Error:
            self._close("the upstream broke the HTTP/2 protocol")
            return
        for event in events:
            if isinstance(event, DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is None:
                    self.acknowledge(event.stream_id, event.flow_controlled_length)
                else:
                    stream._buffer.append((event.data, event.flow_controlled_length))
                    stream._wake()
            elif isinstance(event, ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None and not stream.head.done():
                    stream.head.set_result(_decode(event.headers))
            elif isinstance(event, TrailersReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.trailers = _decode(event.headers)
            elif isinstance(event, StreamEnded):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._ended = True
                    stream._wake()
            elif isinstance(event, StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._fail("the upstream reset the stream")
                self._window_opened(event.stream_id)
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                self._window_opened(getattr(event, "stream_id", 0))
            elif isinstance(event, ConnectionTerminated):
                self.going_away = True
                last = event.last_stream_id if event.last_stream_id is not None else 0
                for stream_id in [s for s in self._streams if s > last]:  # never processed: safe to fail
                    self._streams.pop(stream_id)._fail("the upstream is going away")
        self._flush()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._close("the upstream closed the connection")

    # -- streams -----------------------------------------------------------------------------

    def open(self, fields: list[tuple[bytes, bytes]], *, end: bool) -> UpstreamStream:
        stream_id = self._h2.get_next_available_stream_id()
        stream = self._streams[stream_id] = UpstreamStream(self, stream_id)
        self._h2.send_headers(stream_id, fields, end_stream=end)
        self._flush()
        return stream

    def stream_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def end_stream(self, stream_id: int) -> None:
        if not self.closed and stream_id in self._streams:
            self._h2.end_stream(stream_id)
            self._flush()

    def acknowledge(self, stream_id: int, window: int) -> None:
        if window and not self.closed:
            try:
                self._h2.acknowledge_received_data(window, stream_id)
            except H2Error:  # the stream closed meanwhile: only the connection's share matters now
                self._h2.increment_flow_control_window(window)
            self._flush()

    def reset(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        self._forget_window(stream_id)
        if stream is None or self.closed:
            return
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        except H2Error:
            return
        unread = sum(window for _, window in stream._buffer)
        stream._buffer.clear()
        if unread:
            self._h2.increment_flow_control_window(unread)
        self._flush()

    def _close(self, message: str) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self._streams.values():
            stream._fail(message)
        self._streams.clear()
        self._fail_waiters(UpstreamProtocolError(message))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if not self.closed:
            try:
                self._h2.close_connection()
                self._write_now()
            except H2Error:
                pass
        self._close("the gateway closed the connection")


def request_fields(
    method: str, authority: str, path_qs: str, headers: Fields, *, te_trailers: bool
) -> list[tuple[bytes, bytes]]:
    """RFC 9113 §8.3.1: the request line as pseudo-headers first, Host as :authority, names lower-case."""
    fields = [
        (b":method", method.encode()), (b":scheme", b"http"),
        (b":authority", authority.encode("latin-1")), (b":path", path_qs.encode("latin-1")),
    ]
    for name, value in headers:
        lower = name.lower()
        if lower == "x-request-id":  # new on every request: kept out of the HPACK dynamic table
            fields.append(NeverIndexedHeaderTuple(b"x-request-id", value.encode("latin-1")))
        elif lower != "host":
            fields.append((lower.encode("latin-1"), value.encode("utf-8", "surrogateescape")))
    if te_trailers:
        fields.append((b"te", b"trailers"))
    return fields


def _decode(headers: list[tuple[bytes, bytes]]) -> Fields:
    return [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in headers]


class H2Pool:
    """The upstream's HTTP/2 connections: the first with a free stream slot serves; a new one when none has."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._connections: list[H2UpstreamConnection] = []
        self._connecting: asyncio.Future[H2UpstreamConnection] | None = None

    async def open(self, fields: list[tuple[bytes, bytes]], *, end: bool) -> UpstreamStream:
        conn = await self._connection()
        return conn.open(fields, end=end)

    async def _connection(self) -> H2UpstreamConnection:
        self._connections = [c for c in self._connections if not c.closed and not (c.going_away and c.idle)]
        for conn in self._connections:
            if conn.usable:
                return conn
        if self._connecting is not None:  # one handshake at a time: a burst shares it
            return await asyncio.shield(self._connecting)
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            conn = await self._connect()
        except BaseException as exc:
            self._connecting.set_exception(exc)
            self._connecting.exception()
            raise
        finally:
            connecting, self._connecting = self._connecting, None
        if not connecting.done():
            connecting.set_result(conn)
        self._connections.append(conn)
        return conn

    async def _connect(self) -> H2UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(H2UpstreamConnection, self._host, self._port)
        except TimeoutError as exc:
            raise UpstreamConnectTimeout() from exc
        except OSError as exc:
            raise UpstreamConnectError() from exc
        return conn

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections.clear()

