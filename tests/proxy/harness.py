"""Real servers on 127.0.0.1 for proxy tests: a JWKS issuer, an echo upstream, and the gateway itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt  # PyJWT: tokens are minted by a reference library, never by our own code
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config.load import load_config
from gateway.server import GatewayProcess, bound_port

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
    return runner, bound_port(site)


@dataclass
class Issuer:
    """An identity provider on loopback: keys, a JWKS endpoint whose contents tests change, token minting."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    url: str = ""
    port: int = 0
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    failing: bool = False  # answer 500, as an IdP having a bad day
    etag: bool = False  # send an ETag (a digest of the keys) and answer a matching If-None-Match with 304
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.keys = [rsa_jwk(self.rsa_key, "rsa-1"), ec_jwk(self.ec_key, "ec-1")]
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        self.runner, self.port = await serve(app)
        self.url = f"http://127.0.0.1:{self.port}/"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.failing:
            return web.Response(status=500, text="internal error")
        if not self.etag:
            return web.json_response({"keys": self.keys})
        tag = '"' + hashlib.sha256(json.dumps(self.keys, sort_keys=True).encode()).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.json_response({"keys": self.keys}, headers={"ETag": tag})

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
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    streaming: asyncio.Event = field(default_factory=asyncio.Event)  # a /download or /upload began
    cut: asyncio.Event = field(default_factory=asyncio.Event)  # ... and the gateway dropped it mid-way

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("POST", "/upload", self._upload)
        app.router.add_route("POST", "/answer-first", self._answer_first)
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
        self.slow_started.set()
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return web.json_response({"slept": delay})

    async def _upload(self, request: web.Request) -> web.Response:
        return web.json_response({"received": await self._read_body(request)})

    async def _read_body(self, request: web.Request) -> int:
        """Read the body to its end; `cut` is set if the gateway dropped it before then."""
        total = 0
        self.streaming.set()
        try:
            async for chunk in request.content.iter_chunked(1 << 16):
                total += len(chunk)
        except BaseException:
            self.cut.set()
            raise
        if request.content_length is not None and total < request.content_length:
            self.cut.set()  # the gateway closed before the whole body
        return total

    async def _answer_first(self, request: web.Request) -> web.StreamResponse:
        """Answers before it reads the body (a streaming service): the head and a first piece, then the body."""
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"started\n")
        await resp.write(b"received %d\n" % await self._read_body(request))
        return resp

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * (1 << 16)
        sent = 0
        self.streaming.set()
        try:
            while sent < size:
                n = min(len(block), size - sent)
                await resp.write(block[:n])
                sent += n
        except BaseException:
            self.cut.set()
            raise
        return resp

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if "flood" in request.query:  # push megabytes whether or not the client reads them
            self.streaming.set()
            try:
                for _ in range(int(request.query["flood"])):
                    await ws.send_bytes(b"w" * (1 << 20))
            except BaseException:
                self.cut.set()
                raise
            return ws
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewaySubprocess:
    """`python -m gateway run -c FILE` as a child process: what signal and memory tests need."""

    def __init__(self, config_path: Path, admin_port: int, log_dir: Path) -> None:
        self.config_path = config_path
        self.admin_port = admin_port
        self.stdout_path = log_dir / "gateway.stdout"
        self.stderr_path = log_dir / "gateway.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 15.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)], stdout=out, stderr=err, env=env
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited: {self.stderr_path.read_text()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.admin_port}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("gateway not ready in time")
                await asyncio.sleep(0.05)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        # Generous: a stop drains every worker (shutdown_grace each) and CI machines stall. A real hang
        # still fails, with the processes left and the last log lines in the message.
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not exit in time; {self._left_behind()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def _left_behind(self) -> str:
        """For a failure message: the processes still running under the gateway, and its last log lines."""
        assert self.proc is not None
        tree = [f"{pid} ({process_state(pid)})" for pid in children(self.proc.pid)]
        lines = self.stderr_path.read_text(errors="replace").splitlines()[-15:]
        return f"workers left: {tree or 'none'}; last stderr lines:\n" + "\n".join(lines)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def children(pid: int) -> list[int]:
    """The child processes of `pid` (a supervisor's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def process_state(pid: int) -> str | None:
    """`pid`'s state letter from /proc (R, S, Z...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


async def start_workers(
    tmp_path: Path, template: str, issuer: Issuer, upstream: Upstream, workers: int = 2
) -> tuple[GatewaySubprocess, int, int]:
    """`gateway run` of a proxy-test config template on fixed ports with `workers` processes, once all
    of them are up: the process (kill it when done), the proxy port and the admin port."""
    port, admin_port = free_port(), free_port()
    text = template.format(upstream_port=upstream.port, issuer_url=issuer.url, upstream_timeout="5s")
    text = text.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"', 1)
    text = text.replace('admin_listen: "127.0.0.1:0"', f'admin_listen: "127.0.0.1:{admin_port}"', 1)
    text = text.replace("  shutdown_grace: 2s\n", f"  shutdown_grace: 2s\n  workers: {workers}\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    proc = GatewaySubprocess(path, admin_port, tmp_path)
    try:
        await proc.start()
        assert proc.proc is not None
        pid = proc.proc.pid
        await wait_for(lambda: len(children(pid)) == workers, timeout=10)
    except BaseException:
        proc.kill()
        raise
    return proc, port, admin_port
