"""A lean HTTP/1.1 client for the one upstream: keep-alive pool, one write per request head, strict response framing.

aiohttp's general-purpose client costs more per request than everything else the
gateway does; the upstream is a single, known origin speaking HTTP/1.1, so this
client does only that: no redirects, cookies, proxies or decompression.
Response framing follows RFC 9112 §6: no body for HEAD, 1xx, 204 and 304; else
chunked when Transfer-Encoding ends in chunked; else one Content-Length; else
until the connection closes. Anything ambiguous is an UpstreamProtocolError (502).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

HEAD_LIMIT = 64 * 1024  # status line + headers of one response
CHUNK = 64 * 1024
IDLE_REUSE_SECONDS = 4.0  # below common upstream keep-alive timeouts (Node's is 5 s)
MAX_IDLE = 256


class UpstreamConnectError(Exception):
    """The connection could not be made (refused, unreachable)."""


class UpstreamConnectTimeout(Exception):
    """The connection was not made within connect_timeout."""


class UpstreamProtocolError(Exception):
    """The upstream closed, reset or sent something that is not a valid HTTP/1.1 response."""


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    content_length: int | None  # None: chunked or until close
    chunked: bool
    keep_alive: bool


class Connection:
    """One keep-alive connection, carrying one exchange at a time."""

    __slots__ = ("deadline", "expired", "idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False
        self.deadline = 0.0  # while watched: when the response head must have arrived
        self.expired = False  # the watchdog cut it at its deadline

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < IDLE_REUSE_SECONDS
        )

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle keep-alive connections to host:port, most recently used first."""

    def __init__(self, host: str, port: int, connect_timeout: float, *, tls: bool = False) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._ssl = ssl.create_default_context() if tls else None
        self._idle: deque[Connection] = deque()
        self._watched: set[Connection] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def watch(self, conn: Connection, timeout: float) -> None:
        """Cut `conn` if no response head arrived within `timeout`: one sweeping task for all
        exchanges instead of a timer per request (the deadline is kept to within timeout/10)."""
        conn.deadline = time.monotonic() + timeout
        self._watched.add(conn)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._sweep(min(max(timeout / 10, 0.01), 0.5)))

    def unwatch(self, conn: Connection) -> None:
        self._watched.discard(conn)

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in [c for c in self._watched if c.deadline <= now]:
                conn.expired = True
                self._watched.discard(conn)
                # The pending read then fails at once; the reader sees `expired` and answers 504.
                conn.writer.transport.abort()

    async def acquire(self) -> Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now):
                conn.reused = True
                return conn
            conn.close()
        return await self.connect()

    async def connect(self) -> Connection:
        """A new connection, never from the idle set (an upgraded one is never returned to it)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, limit=HEAD_LIMIT, ssl=self._ssl
                )
        except TimeoutError as exc:
            raise UpstreamConnectTimeout() from exc
        except OSError as exc:
            raise UpstreamConnectError() from exc
        return Connection(reader, writer)

    def release(self, conn: Connection) -> None:
        if len(self._idle) >= MAX_IDLE or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.reused = False
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def encode_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers in one buffer; values were checked for CR/LF upstream of here."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


_NO_BODY_STATUS = frozenset({204, 304})
_FIELD_LINE = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*"
_FIELD_LINES = re.compile(rf"{_FIELD_LINE}(?:\r\n{_FIELD_LINE})*")


async def read_head(reader: asyncio.StreamReader, method: str) -> ResponseHead:
    """Read one final response head, skipping interim 1xx responses (RFC 9110 §15.2)."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise UpstreamProtocolError("response head too large") from exc
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise UpstreamProtocolError("connection closed before a response") from exc
        head = _parse_head(raw, method)
        if 100 <= head.status < 200 and head.status != 101:
            continue
        return head


def _parse_head(raw: bytes, method: str) -> ResponseHead:
    try:
        text = raw[:-4].decode("latin-1")
        status_line, *header_lines = text.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
    except ValueError as exc:
        raise UpstreamProtocolError("invalid status line") from exc
    if version not in ("HTTP/1.1", "HTTP/1.0") or not 100 <= status <= 999 or len(code) != 3:
        raise UpstreamProtocolError("invalid status line")
    if header_lines and _FIELD_LINES.fullmatch(text, len(status_line) + 2) is None:
        # Every line a token, a colon and a value without controls (RFC 9110 §5.1, §5.5):
        # this also refuses obsolete line folding. One regex pass over the whole block.
        raise UpstreamProtocolError("invalid header line")
    headers: list[tuple[str, str]] = []
    lengths: set[str] = set()
    chunked = False
    close = version == "HTTP/1.0"
    for line in header_lines:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        lower = name.lower()
        if lower == "content-length":
            lengths.add(value)
        elif lower == "transfer-encoding":
            chunked = value.lower().rsplit(",", 1)[-1].strip() == "chunked"
            if not chunked:
                close = True  # RFC 9112 §6.3: not chunked-final: read until close
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "close" in tokens:
                close = True
            elif "keep-alive" in tokens and version == "HTTP/1.0":
                close = False
        headers.append((name, value))
    content_length: int | None = None
    if method == "HEAD" or status < 200 or status in _NO_BODY_STATUS:
        return ResponseHead(status, reason, headers, 0, False, not close)
    if chunked:
        return ResponseHead(status, reason, headers, None, True, not close)
    if lengths:
        if len(lengths) > 1:
            raise UpstreamProtocolError("conflicting Content-Length")  # RFC 9112 §6.3 item 5
        (length,) = lengths
        if not length.isdigit() or len(length) > 18:
            raise UpstreamProtocolError("invalid Content-Length")
        content_length = int(length)
        return ResponseHead(status, reason, headers, content_length, False, not close)
    return ResponseHead(status, reason, headers, None, False, False)  # until close


async def read_exactly(reader: asyncio.StreamReader, length: int) -> bytes:
    try:
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise UpstreamProtocolError("connection closed mid-body") from exc


async def read_body(reader: asyncio.StreamReader, head: ResponseHead, idle_timeout: float) -> AsyncIterator[bytes]:
    """The response body in pieces, de-chunked; a stall longer than idle_timeout raises TimeoutError."""
    if head.chunked:
        async for piece in _read_chunked(reader, idle_timeout):
            yield piece
        return
    remaining = head.content_length
    while remaining is None or remaining > 0:
        try:
            async with asyncio.timeout(idle_timeout):
                data = await reader.read(CHUNK if remaining is None else min(CHUNK, remaining))
        except ConnectionError as exc:
            raise UpstreamProtocolError("connection reset mid-body") from exc
        if not data:
            if remaining is None:
                return  # close-delimited: the end of the body
            raise UpstreamProtocolError("connection closed mid-body")
        if remaining is not None:
            remaining -= len(data)
        yield data


async def _read_chunked(reader: asyncio.StreamReader, idle_timeout: float) -> AsyncIterator[bytes]:
    try:
        while True:
            async with asyncio.timeout(idle_timeout):
                line = await reader.readuntil(b"\r\n")
            size_text = line[:-2].split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise UpstreamProtocolError("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                while True:  # trailers are dropped: they would need a chunked response of our own
                    async with asyncio.timeout(idle_timeout):
                        if await reader.readuntil(b"\r\n") == b"\r\n":
                            return
            while size > 0:
                async with asyncio.timeout(idle_timeout):
                    data = await reader.read(min(CHUNK, size))
                if not data:
                    raise UpstreamProtocolError("connection closed mid-chunk")
                size -= len(data)
                yield data
            async with asyncio.timeout(idle_timeout):
                if await reader.readexactly(2) != b"\r\n":
                    raise UpstreamProtocolError("invalid chunk end")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise UpstreamProtocolError("connection closed mid-body") from exc
