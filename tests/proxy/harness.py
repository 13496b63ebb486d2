"""Real servers on 127.0.0.1 for proxy tests: a JWKS issuer, an echo upstream, and the gateway itself."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt  # PyJWT: tokens are minted by a reference library, never by our own code
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config.load import load_config
from gateway.server import GatewayProcess

AUDIENCE = "orders-api"


def b64url_uint(value: int, length: int | None = None) -> str:
    raw = value.to_bytes(length or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    pub = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64url_uint(pub.n), "e": b64url_uint(pub.e)}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    pub = key.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "crv": "P-256", "x": b64url_uint(pub.x, 32), "y": b64url_uint(pub.y, 32)}


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    # handler_cancellation: the upstream notices when the gateway drops the exchange.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    return runner, int(server.sockets[0].getsockname()[1])


@dataclass
class Issuer:
    """An identity provider on loopback: keys, a JWKS endpoint whose contents tests change, token minting."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    url: str = ""
    port: int = 0
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.keys = [rsa_jwk(self.rsa_key, "rsa-1"), ec_jwk(self.ec_key, "ec-1")]
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        self.runner, self.port = await serve(app)
        self.url = f"http://127.0.0.1:{self.port}/"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": self.keys})

    def claims(self, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600}
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, alg: str = "RS256", kid: str | None = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key: Any = self.rsa_key if alg.startswith(("RS", "PS")) else self.ec_key
        kid = kid or ("rsa-1" if alg.startswith(("RS", "PS")) else "ec-1")
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers={"kid": kid, **(headers or {})})


@dataclass
class Upstream:
    """The application behind the gateway: echoes what it saw, and misbehaves on request."""

    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("POST", "/upload", self._upload)
        app.router.add_get("/download/{size}", self._download)
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner, self.port = await serve(app)

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.seen.append(record)
        resp = web.json_response(record)
        resp.headers["Set-Cookie"] = "a=1"
        resp.headers.add("Set-Cookie", "b=2")
        return resp

    async def _slow(self, request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "5"))
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return web.json_response({"slept": delay})

    async def _upload(self, request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
        return web.json_response({"received": total})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * (1 << 16)
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            await resp.write(block[:n])
            sent += n
        return resp

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"x-user-id": request.headers.get("X-User-Id")}))
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def start_gateway(config_path: Path) -> GatewayProcess:
    process = GatewayProcess(load_config(config_path), str(config_path))
    await process.start()
    return process


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll a condition (not a fixed sleep): returns as soon as it holds, fails after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side URL normalization); return status and the rest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data
