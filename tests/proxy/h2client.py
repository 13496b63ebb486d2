"""A small HTTP/2 test client on the `h2` state machine: real sockets, many streams on one connection."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError


@dataclass
class H2Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None  # the RST_STREAM error code, when the stream was reset

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    """One connection; `request` opens a stream and waits for its whole answer."""

    def __init__(self) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.responses: dict[int, H2Response] = {}
        self.done: dict[int, asyncio.Future[H2Response]] = {}
        self.goaway: ConnectionTerminated | None = None
        self.error: ProtocolError | None = None
        self.closed = asyncio.Event()
        self.held: set[int] = set()  # streams whose window this client never reopens (the connection's it does)
        self.hold_connection = False  # ... nor the connection's window
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext | None = None) -> H2Client:
        client = cls()
        client.reader, client.writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        client.h2.initiate_connection()
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        assert self.writer is not None
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def start(
        self, method: str, path: str, headers: list[tuple[str, str]] | None = None, *, end: bool = True, port: int = 0
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")]
        self.h2.send_headers(stream_id, fields + (headers or []), end_stream=end)
        self.responses[stream_id] = H2Response()
        self.done[stream_id] = asyncio.get_running_loop().create_future()
        self.flush()
        return stream_id

    async def request(
        self, method: str, path: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", port: int = 0
    ) -> H2Response:
        stream_id = self.start(method, path, headers, end=not body, port=port)
        if body:
            await self.send_body(stream_id, body)
        return await asyncio.wait_for(self.done[stream_id], 10)

    async def send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                await asyncio.sleep(0.005)  # the reader task applies the server's WINDOW_UPDATEs
                continue
            self.h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        self.h2.end_stream(stream_id)
        self.flush()

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self._on(event)
                self.flush()
        except (ConnectionError, OSError):
            pass
        except ProtocolError as exc:
            self.error = exc
        finally:
            self.closed.set()
            for future in self.done.values():
                if not future.done():
                    future.set_exception(ConnectionResetError("connection closed"))

    def _on(self, event: object) -> None:
        if isinstance(event, ResponseReceived):
            self.responses[event.stream_id].status = int(dict(event.headers)[":status"])
            self.responses[event.stream_id].headers = [(n, v) for n, v in event.headers if not n.startswith(":")]
        elif isinstance(event, DataReceived):
            self.responses[event.stream_id].body += event.data
            if self.hold_connection:
                pass  # a reader that stopped: no WINDOW_UPDATE at all
            elif event.stream_id in self.held:
                self.h2.increment_flow_control_window(event.flow_controlled_length)  # the connection's only
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, TrailersReceived):
            self.responses[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, StreamEnded):
            self._finish(event.stream_id)
        elif isinstance(event, StreamReset):
            self.responses[event.stream_id].reset = int(event.error_code)
            self._finish(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event
            if event.error_code == 0:
                # h2 closes its state machine on any GOAWAY; a graceful one (RFC 9113 §6.8) lets the
                # streams it names finish, so this client keeps reading them.
                self.h2.state_machine.state = ConnectionState.CLIENT_OPEN

    def _finish(self, stream_id: int) -> None:
        future = self.done.get(stream_id)
        if future is not None and not future.done():
            future.set_result(self.responses[stream_id])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()
