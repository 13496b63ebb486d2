"""Test kit for the key lifecycle: a controllable JWKS server on 127.0.0.1, real JWKs, a pinned clock, recorded events."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config.model import IssuerConfig, JwksConfig, Secret
from gateway.jose.jwk import KeySet
from gateway.keystore import KeyEvents

ISSUER = "https://idp.test/"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64u(n), "e": b64u(e)}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": b64u(nums.x.to_bytes(32, "big")),
        "y": b64u(nums.y.to_bytes(32, "big")),
    }


def oct_jwk(kid: str) -> dict[str, Any]:
    return {"kty": "oct", "kid": kid, "k": b64u(b"k" * 32)}


@dataclass(frozen=True)
class KeySets:
    """Three JWK Set documents with disjoint kids: A (RSA + EC), B (RSA + EC), C (EC)."""

    a: dict[str, Any]
    b: dict[str, Any]
    c: dict[str, Any]


def make_key_sets() -> KeySets:
    # RSA 2048 generation is the slow part: two keys, once per session.
    rsa_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeySets(
        a={"keys": [rsa_jwk(rsa_a, "a-rsa"), ec_jwk(ec.generate_private_key(ec.SECP256R1()), "a-ec")]},
        b={"keys": [rsa_jwk(rsa_b, "b-rsa"), ec_jwk(ec.generate_private_key(ec.SECP256R1()), "b-ec")]},
        c={"keys": [ec_jwk(ec.generate_private_key(ec.SECP256R1()), "c-ec")]},
    )


def kids(key_set: KeySet | None) -> set[str | None]:
    return set() if key_set is None else {k.kid for k in key_set.keys}


def kids_of(document: dict[str, Any]) -> set[str | None]:
    return {k.get("kid") for k in document["keys"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def issuer_config(
    location: str | None,
    *,
    kind: str = "uri",
    name: str = "corp",
    issuer: str = ISSUER,
    refresh_interval: float = 600.0,
    min_refresh_interval: float = 30.0,
    timeout: float = 2.0,
    allow_http: bool = True,
    inline: dict[str, Any] | None = None,
    secret: bytes | None = None,
    algorithms: tuple[str, ...] = ("RS256", "ES256"),
) -> IssuerConfig:
    jwks = None
    if kind != "none":
        jwks = JwksConfig(
            kind=kind,  # type: ignore[arg-type]
            location=location,
            inline=inline,
            refresh_interval=refresh_interval,
            min_refresh_interval=min_refresh_interval,
            timeout=timeout,
            allow_http=allow_http,
        )
    return IssuerConfig(
        name=name,
        issuer=issuer,
        algorithms=algorithms,
        jwks=jwks,
        secret=Secret(secret) if secret is not None else None,
    )


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingEvents(KeyEvents):
    """Records every event and wakes waiters, so tests wait on behaviour, not on time."""

    def __init__(self) -> None:
        self.refreshes: list[tuple[str, str]] = []
        self.loaded: list[tuple[str, int]] = []
        self.skipped: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def refresh(self, issuer: str, result: str) -> None:
        self.refreshes.append((issuer, result))
        self._changed.set()

    def keys_loaded(self, issuer: str, count: int) -> None:
        self.loaded.append((issuer, count))
        self._changed.set()

    def key_skipped(self, issuer: str, message: str) -> None:
        self.skipped.append((issuer, message))
        self._changed.set()

    def results(self, issuer: str = "corp") -> list[str]:
        return [r for i, r in self.refreshes if i == issuer]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once `predicate()` holds; it is re-checked after each event (bounded by `timeout`)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_result(self, result: str, *, after: int = 0, issuer: str = "corp") -> None:
        """Wait until `result` is reported for `issuer` at an index >= `after`."""
        await self.wait_for(lambda: result in self.results(issuer)[after:])


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class JwksServer:
    """A JWKS / discovery server whose behaviour each test sets through plain attributes."""

    port: int = field(default_factory=free_port)
    jwks: dict[str, Any] | None = None
    status: int = 200
    raw: bytes | None = None  # served instead of `jwks` (garbage, oversize)
    chunked: bool = False  # stream `raw` without Content-Length
    delay: float = 0.0  # seconds before answering (released at teardown)
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str | None = None
    discovery: dict[str, Any] | None = None
    redirect_to: str | None = None  # where /redirect points
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/jwks.json"

    def hits(self, path: str = "/jwks.json") -> int:
        return sum(1 for s in self.seen if s.path == path)

    async def _handle_jwks(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.headers)))
        if self.delay:
            try:
                async with asyncio.timeout(self.delay):
                    await self._release.wait()
            except TimeoutError:
                pass
        headers: dict[str, str] = {}
        if self.cache_control:
            headers["Cache-Control"] = self.cache_control
        if self.etag:
            headers["ETag"] = self.etag
            if request.headers.get("If-None-Match") == self.etag:
                return web.Response(status=304, headers=headers)
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
            if request.headers.get("If-Modified-Since") == self.last_modified and not self.etag:
                return web.Response(status=304, headers=headers)
        if self.status != 200:
            return web.Response(status=self.status, text="SECRET-ERROR-PAGE", headers=headers)
        body = self.raw if self.raw is not None else json.dumps(self.jwks).encode()
        if self.chunked:
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(0, len(body), 8192):
                await resp.write(body[i : i + 8192])
            await resp.write_eof()
            return resp
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _handle_discovery(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.path, dict(request.headers)))
        if self.discovery is None:
            return web.Response(status=404)
        return web.json_response(self.discovery)

    async def _handle_redirect(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.path, dict(request.headers)))
        return web.Response(status=302, headers={"Location": self.redirect_to or "/jwks.json"})

    async def up(self) -> None:
        """Start listening (again); connection attempts before this are refused."""
        if self._runner is None:
            app = web.Application()
            app.router.add_get("/jwks.json", self._handle_jwks)
            app.router.add_get("/.well-known/openid-configuration", self._handle_discovery)
            app.router.add_get("/redirect", self._handle_redirect)
            self._runner = web.AppRunner(app, shutdown_timeout=0.1)
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def down(self) -> None:
        """Stop listening so new connections are refused."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def cleanup(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
