"""What both HTTP/2 ends share (the proxy port's server, the upstream client): frames out, and the waits that pace them.

The `h2` state machine only queues bytes; each end is an asyncio protocol that writes
them once the event loop has run everything ready (one write for a response's
HEADERS, DATA and trailers), sends DATA within the peer's flow-control windows and
frame size (RFC 9113 §5.2, §4.2), and waits while its own socket buffer is full.
"""

from __future__ import annotations

import asyncio

from h2.connection import H2Connection


class H2Endpoint(asyncio.Protocol):
    """An asyncio protocol around one `H2Connection`: buffered writes, flow-controlled DATA, drain."""

    def __init__(self, h2: H2Connection) -> None:
        self._loop = asyncio.get_running_loop()
        self._h2 = h2
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._write_paused = False
        self._flush_pending = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        # Streams that want to send DATA and cannot, since when (loop time): their window is shut
        # (key 0: the connection's). Kept across wake-ups until a byte goes out, so a window that
        # opens for others, or by nothing, does not restart the clock.
        self._stalled: dict[int, float] = {}
        self._resumes = 0  # resume_writing calls: the peer took bytes off the socket

    def stream_open(self, stream_id: int) -> bool:
        """Whether `stream_id` may still be written (each end keeps its own streams)."""
        raise NotImplementedError

    # -- writing -----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Frames go out once the event loop has run everything ready now: one write for a
        response's HEADERS, DATA and trailers, or a batch of WINDOW_UPDATEs, not one each."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._write_now)

    def _write_now(self) -> None:
        self._flush_pending = False
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    async def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """DATA within the peer's windows and frame size; waits for WINDOW_UPDATEs and a writable socket."""
        h2 = self._h2
        view = memoryview(data)
        while True:
            if self.closed or not self.stream_open(stream_id):
                self._unstall(stream_id)
                raise ConnectionResetError("the stream is gone")
            window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if window <= 0 and view:
                now = self._loop.time()
                self._stalled.setdefault(stream_id, now)
                if h2.outbound_flow_control_window <= 0:
                    self._stalled.setdefault(0, now)
                waiter = self._window_waiters.get(stream_id)
                if waiter is None or waiter.done():
                    waiter = self._window_waiters[stream_id] = self._loop.create_future()
                await waiter
                continue
            if self._stalled:
                self._stalled.pop(stream_id, None)
                self._stalled.pop(0, None)
            piece, view = view[:window], view[window:]
            h2.send_data(stream_id, bytes(piece), end_stream=end and not view)
            self._flush()
            await self.drain()
            if not view:
                return

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the connection is closed")
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    # -- what wakes the waits ----------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resumes += 1
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _window_opened(self, stream_id: int) -> None:
        """A WINDOW_UPDATE (or new SETTINGS): for the connection (0) every stream may go on."""
        if stream_id == 0:
            waiters = list(self._window_waiters.values())
            self._window_waiters.clear()
        else:
            waiter = self._window_waiters.pop(stream_id, None)
            waiters = [waiter] if waiter is not None else []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _forget_window(self, stream_id: int) -> None:
        self._window_waiters.pop(stream_id, None)
        self._unstall(stream_id)

    def _unstall(self, stream_id: int) -> None:
        """`stream_id` waits no more; the connection's entry goes with the last stream that waited on it."""
        stalled = self._stalled
        if stalled.pop(stream_id, None) is not None and stalled.keys() == {0}:
            stalled.clear()

    def _fail_waiters(self, exc: BaseException) -> None:
        """The connection is gone: every wait ends with `exc`."""
        for waiter in [*self._drain_waiters, *self._window_waiters.values()]:
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: the waiting task may already be gone
        self._drain_waiters.clear()
        self._window_waiters.clear()
        self._stalled.clear()
