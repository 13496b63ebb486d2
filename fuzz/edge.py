"""Fuzz the server edge: raw request bytes into a running gateway's socket, every answer from the table.

A gateway (the real GatewayProcess: its server edge, the whole request path)
and a small upstream run on loopback in a background thread's
event loop (uvloop, as in production). Each input is sent as it is on a fresh
connection, followed by one `Connection: close` request, and everything the
gateway answers is read until it closes the connection (or stays silent).

Invariants: every status line in the answer
carries a status from the documented table (README "Replies": 400 401 403 404 408
431 502 503 504, the interim 100, or the upstream's 200) and never 500; and the
upstream never sees a request for the `/private` route without the identity
header the gateway sets from a verified token (it would answer 597).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from fuzz.common import AUDIENCE, EC_KEY, ISSUER, b64u, ec_public_jwk
from gateway.access_log import AccessLog
from gateway.config.load import load_config
from gateway.server import GatewayProcess, bound_port

ALLOWED = frozenset({100, 200, 400, 401, 403, 404, 408, 431, 502, 503, 504})
BREACH = 597
ANSWER_DEADLINE = 10.0
IDLE = 0.25
CLOSING_REQUEST = b"GET /public/end HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"
_STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")

CONFIG = """
server:
  listen: "127.0.0.1:0"
  admin_listen: "127.0.0.1:0"
  max_header_bytes: 2048
  max_token_bytes: 1024
  shutdown_grace: 0s
upstream:
  url: "http://127.0.0.1:{port}"
  connect_timeout: 1s
  timeout: 2s
tokens:
  - header: Authorization
    prefix: "Bearer "
  - cookie: access_token
  - query: access_token
issuers:
  - name: fuzz
    issuer: "{issuer}"
    audiences: ["{audience}"]
    algorithms: [ES256]
    jwks:
      inline: {jwks}
forward:
  claims_to_headers:
    sub: X-User-Id
routes:
  - name: public
    match: {{prefix: /public}}
    auth: public
  - name: private
    match: {{prefix: /private}}
    claims:
      scope: {{contains: read}}
  - name: optional
    match: {{prefix: /opt}}
    auth: optional
"""


def token(**claims: object) -> str:
    """An ES256 token of the fuzz issuer, valid until 2100 unless `claims` say otherwise."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "read", "exp": 4102444800, **claims}
    head = b64u(json.dumps({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}).encode())
    signing_input = f"{head}.{b64u(json.dumps(body).encode())}"
    r, s = decode_dss_signature(EC_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def _upstream(request: web.BaseRequest) -> web.StreamResponse:
    await request.read()
    if request.path.startswith("/private") and "X-User-Id" not in request.headers:
        return web.Response(status=BREACH, text="reached without identity")
    return web.Response(text="ok")


class _Edge:
    """The background loop, the upstream and the gateway; started once per fuzzing process."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="fuzz-edge", daemon=True).start()
        if not self._ready.wait(30):
            raise RuntimeError("the fuzz gateway did not start")

    def _run(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._start())
        self._ready.set()
        loop.run_forever()

    async def _start(self) -> None:
        runner = web.ServerRunner(web.Server(_upstream, access_log=None))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        jwks = json.dumps({"keys": [ec_public_jwk()]})
        text = CONFIG.format(port=bound_port(site), issuer=ISSUER, audience=AUDIENCE, jwks=jwks)
        path = Path(tempfile.mkdtemp(prefix="fuzz-edge-")) / "gateway.yaml"
        path.write_text(text)
        process = GatewayProcess(load_config(path))
        # Access lines are still formatted (that code is fuzzed too), but not printed.
        process.gateway.log = AccessLog(open(os.devnull, "w"))
        await process.start()
        self.port = process.proxy_port


_EDGE: _Edge | None = None


def prepare() -> None:
    global _EDGE
    if _EDGE is None:
        _EDGE = _Edge()
        _EDGE.start()


def exchange(data: bytes) -> bytes:
    """Send `data` then a closing request on one connection; return all the gateway wrote.

    The write side stays open (asyncio closes a connection on a half-close before
    answering); the trailing `Connection: close` request ends a complete exchange
    at once, and an incomplete one (a body still owed) ends after IDLE seconds of silence.
    """
    prepare()
    assert _EDGE is not None
    chunks = []
    with socket.create_connection(("127.0.0.1", _EDGE.port), timeout=IDLE) as sock:
        try:
            sock.sendall(data + CLOSING_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered (e.g. 400) and closed before reading everything
        deadline = time.monotonic() + ANSWER_DEADLINE
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                break  # silence: the gateway waits for bytes this input never sends
            if not chunk:
                break
            chunks.append(chunk)
            assert time.monotonic() < deadline, "the gateway kept talking past the deadline"
    return b"".join(chunks)


def check(data: bytes) -> None:
    answer = exchange(data)
    for match in _STATUS_LINE.finditer(answer):
        status = int(match.group(1))
        assert status != BREACH, "the upstream saw /private without a verified identity"
        assert status in ALLOWED, f"status {status} is not in the documented table"
