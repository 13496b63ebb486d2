"""Forwarding to the upstream: header rewrite by a precomputed plan, streamed bodies both ways, WebSockets, h2c."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from multidict import CIMultiDictProxy
from yarl import URL

from gateway.access_log import Exchange
from gateway.config.model import UpstreamConfig
from gateway.edge import Body, ServerRequest, Tunnel
from gateway.grpc import upstream_deadline
from gateway.local_reply import SERVER_HEADER
from gateway.upstream_h2 import H2Pool, UpstreamStream, request_fields
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
    def build(
        cls, claim_header_names: Iterable[str], keep_authorization: bool, *, drop_dpop_proof: bool = False
    ) -> HeaderPlan:
        drop = set(HOP_BY_HOP | GATEWAY_SET | CONSUMED)
        drop.update(n.lower() for n in claim_header_names)
        if not keep_authorization:
            drop.add("authorization")
        if drop_dpop_proof:
            drop.add("dpop")  # the proof was for the gateway (SPEC: never forwarded upstream)
        return cls(frozenset(drop))

    def request_headers(
        self,
        incoming: CIMultiDictProxy[str],
        *,
        remote: str | None,
        scheme: str,
        request_id: str,
        extra: list[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """The upstream request's headers: strip first (ours, hop-by-hop, those named in Connection), then set.

        Everything set here was dropped from the client's headers first, so it is appended, never merged.
        """
        drop = self.drop
        connection = incoming.get("Connection")
        if connection:
            drop = drop | _named_in(connection)
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


def _response_headers(upstream: list[tuple[str, str]], request_id: str) -> list[tuple[str, str]]:
    """Upstream response headers less hop-by-hop ones (and those its Connection names); repeats such
    as Set-Cookie kept; X-Request-Id and Server added when the upstream sent none."""
    out: list[tuple[str, str]] = []
    named: set[str] | None = None
    has_id = has_server = False
    for name, value in upstream:  # one pass, lowering each name once
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == "connection":
                named = _named_in(value) if named is None else named | _named_in(value)
            continue
        if lower == "x-request-id":
            has_id = True
        elif lower == "server":
            has_server = True
        out.append((name, value))
    if named:  # rare: a Connection header naming more than itself; the second pass only then
        out = [(n, v) for n, v in out if n.lower() not in named]
        has_id = "x-request-id" not in named and has_id
        has_server = "server" not in named and has_server
    # The client can correlate with our logs even when the app does not echo the id.
    if not has_id:
        out.append(("X-Request-Id", request_id))
    if not has_server:
        out.append(SERVER_HEADER)
    return out


def _with_ours(headers: list[tuple[str, str]], ours: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The gateway's own answer headers (a fresh DPoP-Nonce) replace any upstream copy."""
    if not ours:
        return headers
    names = {name.lower() for name, _ in ours}
    return [(n, v) for n, v in headers if n.lower() not in names] + list(ours)


class Upstream:
    """The one upstream application, over a lean keep-alive HTTP/1.1 pool; WebSockets as byte tunnels."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        url = URL(cfg.url)
        self._default_host = f"{url.host}:{url.port}" if url.port else str(url.host)
        self._pool = Pool(str(url.host), int(url.port or 80), cfg.connect_timeout, tls=url.scheme == "https")
        self._timeout = cfg.timeout
        # upstream.protocol: h2c: requests go over multiplexed HTTP/2 connections instead.
        self._h2 = H2Pool(str(url.host), int(url.port or 80), cfg.connect_timeout) if cfg.protocol == "h2c" else None

    async def close(self) -> None:
        self._pool.close()
        if self._h2 is not None:
            self._h2.close()

    async def forward(
        self,
        request: ServerRequest,
        path_qs: str,
        headers: list[tuple[str, str]],
        ex: Exchange,
        reply_headers: tuple[tuple[str, str], ...] = (),
    ) -> int:
        """Send the request upstream and stream the answer back; ex gets the time to response headers.
        `reply_headers` are the gateway's own, set on the answer (a fresh DPoP-Nonce)."""
        if self._h2 is not None:
            return await self._forward_h2(self._h2, request, path_qs, headers, ex, reply_headers)
        method = request.method
        fields = headers
        if "Host" not in request.headers:  # an HTTP/1.0 client may send none; HTTP/1.1 requires it
            fields.append(("Host", self._default_host))
        small_body = b""
        body = _NO_BODY
        if request.has_body:
            length = request.content_length
            if length is not None and length <= SMALL_BODY:
                # A small body goes out with the head in one write.
                small_body = await request.body.readexactly(length)
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
            response_headers = _with_ours(_response_headers(head.headers, ex.request_id), reply_headers)
            if whole is not None:
                # A small body of known size goes out with the headers in one write: on this
                # path syscalls, not bytes, are the cost. Larger or open-ended bodies stream.
                reusable = head.keep_alive
                await request.send_response(head.status, head.reason, response_headers, whole)
                return head.status
            length = head.content_length
            if length is None:  # we frame it: chunked to the client
                response_headers = [(n, v) for n, v in response_headers if n.lower() != "content-length"]
            await request.start_response(head.status, head.reason, response_headers, chunked=length is None)
            try:
                async for piece in read_body(conn.reader, head, self._timeout):
                    await request.write(piece)
            except (UpstreamProtocolError, TimeoutError):
                # Headers are gone already: cut the client connection so a truncated body
                # is never mistaken for a complete one. (A client that goes away raises
                # ConnectionError from write(): the handler counts that as 499.)
                ex.reason = "upstream_broke_mid_body"
                request.abort()
                return head.status
            await request.end()
            reusable = head.keep_alive
            return head.status
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
        self, request: ServerRequest, first_write: bytes, body: int
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
                    sending = asyncio.ensure_future(_send_body(request.body, conn.writer, chunked=body == _CHUNKED))
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

    async def _forward_h2(
        self, pool: H2Pool, request: ServerRequest, path_qs: str, headers: list[tuple[str, str]], ex: Exchange,
        reply_headers: tuple[tuple[str, str], ...],
    ) -> int:
        """The same exchange over HTTP/2: both bodies stream, trailers pass (gRPC's status lives there);
        the wait for the answer is bounded by upstream.timeout, or a shorter grpc-timeout."""
        # TE is hop-by-hop, but "trailers" is the one value HTTP/2 carries (RFC 9113 §8.2.2), and gRPC requires it.
        te_trailers = "trailers" in request.headers.get("TE", "").lower()
        authority = request.headers.get("Host") or self._default_host
        fields = request_fields(request.method, authority, path_qs, headers, te_trailers=te_trailers)
        started = time.perf_counter()
        try:
            stream = await pool.open(fields, end=not request.has_body)
        except UpstreamConnectTimeout as exc:
            raise UpstreamTimeout() from exc
        except UpstreamConnectError as exc:
            raise UpstreamUnreachable() from exc
        sending = asyncio.ensure_future(_send_h2_body(request.body, stream)) if request.has_body else None
        try:
            try:
                async with asyncio.timeout(upstream_deadline(request.headers, self._timeout)):
                    head = await stream.head
            except TimeoutError as exc:
                raise UpstreamTimeout() from exc
            except UpstreamProtocolError as exc:
                raise UpstreamUnreachable() from exc
            ex.upstream_seconds = time.perf_counter() - started
            status = int(head[0][1])
            response_headers = _with_ours(_response_headers(head[1:], ex.request_id), reply_headers)
            if stream.ended:  # no body (a gRPC trailers-only answer among them): one HEADERS frame
                if not any(n == "content-length" for n, _ in head):
                    response_headers.append(("content-length", "0"))
                await request.send_response(status, _reason(status), response_headers, b"")
                return status
            length = next((v for n, v in head if n == "content-length"), None)
            await request.start_response(status, _reason(status), response_headers, chunked=length is None)
            try:
                while True:
                    async with asyncio.timeout(self._timeout):
                        piece = await stream.read()
                    if not piece:
                        break
                    await request.write(piece)
            except (UpstreamProtocolError, TimeoutError):
                ex.reason = "upstream_broke_mid_body"
                request.abort()  # headers are gone: never let a truncated answer look complete
                return status
            await request.end(stream.trailers)
            return status
        finally:
            if not stream.ended:
                stream.cancel()  # the client left, or the answer was cut: the upstream stops too
            await _settle(sending)

    async def websocket(
        self, request: ServerRequest, path_qs: str, fields: list[tuple[str, str]], ex: Exchange
    ) -> int:
        """Proxy a WebSocket after the same checks as any request: the upstream's handshake answer
        first, then, on 101, bytes both ways until either side closes (RFC 6455 §4: the frames are
        the two ends' business; extensions and subprotocols are negotiated end to end)."""
        fields.append(("Connection", "Upgrade"))
        fields.append(("Upgrade", "websocket"))
        if "Host" not in request.headers:
            fields.append(("Host", self._default_host))
        started = time.perf_counter()
        try:
            conn = await self._pool.connect()
        except UpstreamConnectTimeout as exc:
            raise UpstreamTimeout() from exc
        except UpstreamConnectError as exc:
            raise UpstreamUnreachable() from exc
        try:
            self._pool.watch(conn, self._timeout)
            try:
                conn.writer.write(encode_head("GET", path_qs, fields))
                head = await read_head(conn.reader, "GET")
            except UpstreamProtocolError as exc:
                raise (UpstreamTimeout() if conn.expired else UpstreamUnreachable()) from exc
            finally:
                self._pool.unwatch(conn)
            ex.upstream_seconds = time.perf_counter() - started
            if head.status != 101:
                # The upstream declined the upgrade: its answer goes to the client as any response.
                await _relay_refusal(request, conn, head, ex.request_id, self._timeout)
                return head.status
            headers = [(n, v) for n, v in head.headers if n.lower() not in _TUNNEL_DROP]
            headers += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
            await request.start_response(101, head.reason, headers, chunked=False)
            client = request.upgrade()
            await _pump_both(client, conn)
            return 101
        finally:
            conn.close()


# The 101's hop-by-hop fields we set ourselves; Sec-WebSocket-* pass as the upstream sent them.
_TUNNEL_DROP = HOP_BY_HOP | {"content-length"}


async def _relay_refusal(
    request: ServerRequest, conn: Connection, head: ResponseHead, request_id: str, timeout: float
) -> None:
    headers = _response_headers(head.headers, request_id)
    chunked = head.content_length is None
    if chunked:
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
    await request.start_response(head.status, head.reason, headers, chunked=chunked)
    try:
        async for piece in read_body(conn.reader, head, timeout):
            await request.write(piece)
    except (UpstreamProtocolError, TimeoutError):
        request.abort()
        return
    await request.end()


async def _settle(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def _send_h2_body(body: Body, stream: UpstreamStream) -> None:
    """Copy the client's body to the upstream stream as it arrives, then end the stream."""
    while piece := await body.read(CHUNK):
        await stream.send(piece)
    stream.end()


async def _send_body(body: Body, writer: asyncio.StreamWriter, *, chunked: bool) -> None:
    """Copy the client's body to the upstream as it arrives, never holding it whole (RFC 9112 §7.1 framing)."""
    while piece := await body.read(CHUNK):
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _pump_both(client: Tunnel, upstream: Connection) -> None:
    """Relay bytes both ways; when either side ends, the tunnel ends."""

    async def to_upstream() -> None:
        while data := await client.read():
            upstream.writer.write(data)
            await upstream.writer.drain()

    async def to_client() -> None:
        while data := await upstream.reader.read(CHUNK):
            await client.write(data)

    tasks = [asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
