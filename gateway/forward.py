"""Forwarding to the upstream: header rewrite by a precomputed plan, streamed bodies both ways, WebSockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config.model import UpstreamConfig

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

CHUNK = 64 * 1024
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
    ) -> CIMultiDict[str]:
        """The upstream request's headers: strip first (ours, hop-by-hop, those named in Connection), then set."""
        drop = self.drop
        connection = incoming.get("Connection")
        if connection:
            drop = drop | {t.strip().lower() for t in connection.split(",")}
        if websocket:  # the WebSocket client sets its own handshake headers
            drop = drop | {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            key = name.lower()
            # CGI-style apps read X_User_Id as X-User-Id: an underscore spelling of a
            # dropped header is dropped too.
            if key in drop or ("_" in key and key.replace("_", "-") in drop):
                continue
            out.add(name, value)
        prior = incoming.getall("X-Forwarded-For", ())
        client = remote or "unknown"
        out["X-Forwarded-For"] = ", ".join([*prior, client]) if prior else client
        out["X-Forwarded-Proto"] = scheme
        host = incoming.get("Host")
        if host is not None:
            out["X-Forwarded-Host"] = host
        out["X-Request-Id"] = request_id
        for name, value in extra:
            out[name] = value
        return out


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """Upstream response headers less hop-by-hop ones (and those its Connection names); repeats such as Set-Cookie kept."""
    drop = HOP_BY_HOP
    connection = upstream.headers.get("Connection")
    if connection:
        drop = drop | {t.strip().lower() for t in connection.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


class Upstream:
    """A pooled keep-alive client for the one upstream application."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self._base = cfg.url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop; reused for keep-alive pooling.
        if self._session is not None:
            return self._session
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep an upstream's cookies between clients
            auto_decompress=False,  # bytes pass through as the upstream sent them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_qs: str) -> URL:
        return URL(self._base + path_qs, encoded=True)

    async def forward(
        self,
        request: web.BaseRequest,
        path_qs: str,
        headers: CIMultiDict[str],
        timing: list[float],
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back; timing gets the seconds to response headers."""
        session = self._client()
        body = _stream_body(request) if request.body_exists else None
        started = time.perf_counter()
        try:
            ctx = session.request(
                request.method, self.url(path_qs), headers=headers, data=body,
                allow_redirects=False, compress=None, chunked=None,
            )
            upstream = await ctx.__aenter__()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout() from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable() from exc
        timing.append(time.perf_counter() - started)
        try:
            response_headers = _response_headers(upstream)
            # The client can correlate with our logs even when the app does not echo the id.
            response_headers.setdefault("X-Request-Id", headers["X-Request-Id"])
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                # A small body of known size goes out with the headers in one write: on this
                # path syscalls, not bytes, are the cost. Larger or open-ended bodies stream.
                whole = await upstream.read()
                return web.Response(
                    status=upstream.status, reason=upstream.reason, headers=response_headers, body=whole
                )
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=response_headers)
            await response.prepare(request)
            if request.method != "HEAD":
                try:
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        await response.write(chunk)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    # Headers are gone already: cut the client connection so a truncated body
                    # is never mistaken for a complete one.
                    if request.transport is not None:
                        request.transport.abort()
                    raise
            await response.write_eof()
            return response
        finally:
            await ctx.__aexit__(None, None, None)

    async def websocket(
        self, request: web.BaseRequest, path_qs: str, headers: CIMultiDict[str]
    ) -> web.WebSocketResponse:
        """Proxy a WebSocket after the same checks as any request: connect upstream first, then accept."""
        session = self._client()
        protocols = tuple(p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
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
        await client.prepare(request)
        try:
            await _pump_both(client, upstream)
        finally:
            await upstream.close()
            await client.close()
        return client


async def _stream_body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    # Chunks go upstream as they arrive: bodies are never held whole in memory.
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


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
