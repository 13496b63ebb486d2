"""Forwarding to the upstream: header rewrite by a precomputed plan, streamed bodies both ways, WebSockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.access_log import Exchange
from gateway.config.model import UpstreamConfig
from gateway.local_reply import SERVER_HEADER
from gateway.upstream_http import (
    CHUNK,
    Connection,
    Pool,
    ResponseHead,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    encode_head,
    read_body,
    read_exactly,
    read_head,
)

# RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy ones proxies also drop.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authorization", "proxy-authenticate",
    }
)
# Headers the gateway sets itself: a client's copies never pass.
GATEWAY_SET = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "forwarded"})
# 100-continue is answered by the gateway itself once the request is authorized.
CONSUMED = frozenset({"expect"})

_NO_BODY, _SIZED, _CHUNKED = 0, 1, 2  # how the request body travels upstream
SMALL_BODY = 64 * 1024  # at most this much of a sized response is read whole before answering


class UpstreamUnreachable(Exception):
    """The upstream refused, reset or closed before sending response headers (502)."""


class UpstreamTimeout(Exception):
    """The upstream sent no response headers within upstream.timeout (504)."""


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """What to drop from a client's request headers: computed once per config."""

    drop: frozenset[str]  # lower-case names

    @classmethod
    def build(cls, claim_header_names: Iterable[str], keep_authorization: bool) -> HeaderPlan:
        drop = set(HOP_BY_HOP | GATEWAY_SET | CONSUMED)
        drop.update(n.lower() for n in claim_header_names)
        if not keep_authorization:
            drop.add("authorization")
        return cls(frozenset(drop))

    def request_headers(
        self,
        incoming: CIMultiDictProxy[str],
        *,
        remote: str | None,
        scheme: str,
        request_id: str,
        extra: list[tuple[str, str]],
        websocket: bool = False,
    ) -> list[tuple[str, str]]:
        """The upstream request's headers: strip first (ours, hop-by-hop, those named in Connection), then set.

        Everything set here was dropped from the client's headers first, so it is appended, never merged.
        """
        drop = self.drop
        connection = incoming.get("Connection")
        if connection:
            drop = drop | _named_in(connection)
        if websocket:  # the WebSocket client sets its own handshake headers
            drop = drop | {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
        out: list[tuple[str, str]] = []
        for name, value in incoming.items():
            key = name.lower()
            # CGI-style apps read X_User_Id as X-User-Id: an underscore spelling of a
            # dropped header is dropped too.
            if key in drop or ("_" in key and key.replace("_", "-") in drop):
                continue
            out.append((name, value))
        prior = incoming.getall("X-Forwarded-For", ())
        client = remote or "unknown"
        out.append(("X-Forwarded-For", ", ".join([*prior, client]) if prior else client))
        out.append(("X-Forwarded-Proto", scheme))
        host = incoming.get("Host")
        if host is not None:
            out.append(("X-Forwarded-Host", host))
        out.append(("X-Request-Id", request_id))
        out.extend(extra)
        return out


def _named_in(connection: str) -> set[str]:
    """The header names a Connection value lists: hop-by-hop too (RFC 9110 §7.6.1)."""
    return {t.strip().lower() for t in connection.split(",")}


def _response_headers(upstream: list[tuple[str, str]]) -> CIMultiDict[str]:
    """Upstream response headers less hop-by-hop ones (and those its Connection names); repeats such as Set-Cookie kept."""
    drop = HOP_BY_HOP
    for name, value in upstream:
        if name.lower() == "connection":
            drop = drop | _named_in(value)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream:
        if name.lower() not in drop:
            out.add(name, value)
    return out


class Upstream:
    """The one upstream application: a lean keep-alive HTTP/1.1 pool, and aiohttp for WebSockets."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        url = URL(cfg.url)
        self._base = cfg.url.rstrip("/")
        self._default_host = f"{url.host}:{url.port}" if url.port else str(url.host)
        self._pool = Pool(str(url.host), int(url.port or 80), cfg.connect_timeout, tls=url.scheme == "https")
        self._timeout = cfg.timeout
        self._ws_timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _ws_client(self) -> aiohttp.ClientSession:
        # Made on first WebSocket, inside the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # No pool limit: each upstream WebSocket belongs to one client connection, which
                # is what bounds them; aiohttp's default of 100 made the 101st wait, then 504.
                connector=aiohttp.TCPConnector(limit=0),
                timeout=self._ws_timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # never keep an upstream's cookies between clients
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_qs: str) -> URL:
        return URL(self._base + path_qs, encoded=True)

    async def forward(
        self, request: web.BaseRequest, path_qs: str, headers: list[tuple[str, str]], ex: Exchange
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back; ex gets the time to response headers."""
        method = request.method
        fields = headers
        if "Host" not in request.headers:  # an HTTP/1.0 client may send none; HTTP/1.1 requires it
            fields.append(("Host", self._default_host))
        small_body = b""
        body = _NO_BODY
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= SMALL_BODY:
                # A small body goes out with the head in one write.
                small_body = await request.content.readexactly(length)
            elif length is not None:
                body = _SIZED
            else:  # the client's chunked framing was hop-by-hop: frame it again
                body = _CHUNKED
                fields.append(("Transfer-Encoding", "chunked"))
        wire_head = encode_head(method, path_qs, fields)
        started = time.perf_counter()
        conn, head, whole, sending = await self._send(request, wire_head + small_body, body)
        ex.upstream_seconds = time.perf_counter() - started
        reusable = False
        try:
            response_headers = _response_headers(head.headers)
            # The client can correlate with our logs even when the app does not echo the id.
            response_headers.setdefault("X-Request-Id", ex.request_id)
            response_headers.setdefault(*SERVER_HEADER)  # else aiohttp would name itself and Python
            if whole is not None:
                # A small body of known size goes out with the headers in one write: on this
                # path syscalls, not bytes, are the cost. Larger or open-ended bodies stream.
                reusable = head.keep_alive
                return web.Response(status=head.status, reason=head.reason, headers=response_headers, body=whole)
            length = head.content_length
            if length is None:
                response_headers.popall("Content-Length", None)  # we frame it: chunked to the client
            response = web.StreamResponse(status=head.status, reason=head.reason, headers=response_headers)
            await response.prepare(request)
            try:
                async for piece in read_body(conn.reader, head, self._timeout):
                    await response.write(piece)
            except (UpstreamProtocolError, TimeoutError):
                # Headers are gone already: cut the client connection so a truncated body
                # is never mistaken for a complete one. (A client that goes away raises
                # ConnectionError from write(): the handler counts that as 499.)
                ex.reason = "upstream_broke_mid_body"
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            reusable = head.keep_alive
            return response
        finally:
            if sending is not None and not sending.done():
                reusable = False  # the upstream answered before taking the whole body
                sending.cancel()
            if sending is not None:
                await asyncio.gather(sending, return_exceptions=True)
            if reusable:
                self._pool.release(conn)
            else:
                conn.close()

    async def _send(
        self, request: web.BaseRequest, first_write: bytes, body: int
    ) -> tuple[Connection, ResponseHead, bytes | None, asyncio.Task[None] | None]:
        """Write the request and read the response head (and a small sized body with it, under
        the same deadline), on a pooled connection when one is fresh."""
        for attempt in (1, 2):
            try:
                conn = await self._pool.acquire()
            except UpstreamConnectTimeout as exc:
                raise UpstreamTimeout() from exc
            except UpstreamConnectError as exc:
                raise UpstreamUnreachable() from exc
            sending: asyncio.Task[None] | None = None
            self._pool.watch(conn, self._timeout)
            try:
                conn.writer.write(first_write)
                if body != _NO_BODY:
                    # The body streams while we wait for the answer: an upstream may answer early.
                    sending = asyncio.ensure_future(_send_body(request, conn.writer, chunked=body == _CHUNKED))
                whole = None
                head = await read_head(conn.reader, request.method)
                length = head.content_length
                if request.method != "HEAD" and length is not None and 0 < length <= SMALL_BODY:
                    whole = await read_exactly(conn.reader, length)
                return conn, head, whole, sending
            except UpstreamProtocolError as exc:
                conn.close()
                await _settle(sending)
                if conn.expired:  # the watchdog cut it: upstream.timeout passed
                    raise UpstreamTimeout() from exc
                # A kept-alive connection the upstream had already closed: once more on a new
                # one, but only when nothing of a streamed body has been consumed.
                if attempt == 1 and conn.reused and body == _NO_BODY:
                    continue
                raise UpstreamUnreachable() from exc
            except BaseException:
                conn.close()
                await _settle(sending)
                raise
            finally:
                self._pool.unwatch(conn)
        raise AssertionError("unreachable")



    async def websocket(
        self, request: web.BaseRequest, path_qs: str, fields: list[tuple[str, str]]
    ) -> web.WebSocketResponse:
        """Proxy a WebSocket after the same checks as any request: connect upstream first, then accept."""
        session = self._ws_client()
        protocols = tuple(p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
        headers = CIMultiDict(fields)
        headers.popall("Sec-WebSocket-Protocol", None)
        try:
            upstream = await session.ws_connect(
                self.url(path_qs), headers=headers, protocols=protocols, autoping=False, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout() from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable() from exc
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False, max_msg_size=0
        )
        client.headers.add(*SERVER_HEADER)
        await client.prepare(request)
        try:
            await _pump_both(client, upstream)
        finally:
            await upstream.close()
            await client.close()
        return client


async def _settle(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _send_body(request: web.BaseRequest, writer: asyncio.StreamWriter, *, chunked: bool) -> None:
    """Copy the client's body to the upstream as it arrives, never holding it whole (RFC 9112 §7.1 framing)."""
    async for piece in request.content.iter_chunked(CHUNK):
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


_WsEnd = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


async def _pump(source: _WsEnd, sink: _WsEnd) -> None:
    """Relay one direction message by message; when the source ends, close the sink."""
    async for msg in source:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is aiohttp.WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type is aiohttp.WSMsgType.PONG:
            await sink.pong(msg.data)
    await sink.close()


async def _pump_both(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    tasks = [asyncio.ensure_future(_pump(client, upstream)), asyncio.ensure_future(_pump(upstream, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
