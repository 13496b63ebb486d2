"""Fixtures: an issuer, an upstream and a gateway, all real servers on 127.0.0.1, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.server import GatewayProcess
from tests.proxy.harness import GatewaySubprocess, Issuer, Upstream, free_port, start_gateway, wait_for

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())

BASE_CONFIG = """\
server:
  listen: "127.0.0.1:0"
  admin_listen: "127.0.0.1:0"
  shutdown_grace: 2s
  max_token_bytes: 4096
tokens:
  - header: Authorization
    prefix: "Bearer "
  - cookie: access_token
  - query: access_token
upstream:
  url: "http://127.0.0.1:{upstream_port}"
  connect_timeout: 1s
  timeout: {upstream_timeout}
issuers:
  - name: corp
    issuer: "{issuer_url}"
    audiences: [orders-api]
    algorithms: [RS256, ES256]
    jwks:
      uri: "{issuer_url}jwks.json"
      allow_http: true
      refresh_interval: 10m
      min_refresh_interval: 1s
forward:
  claims_to_headers:
    sub: X-User-Id
    email: X-User-Email
    realm_access.roles: X-User-Roles
  payload_header: X-Jwt-Payload
routes:
  - name: public
    match: {{prefix: /public}}
    auth: public
  - name: optional
    match: {{prefix: /optional}}
    auth: optional
  - name: admin
    match: {{prefix: /admin}}
    auth: required
    claims:
      scope: {{contains: admin}}
  - name: ws
    match: {{path: /ws}}
    auth: required
  - name: api
    match: {{prefix: /api}}
    auth: required
  - name: upstream-misc
    match: {{regex: "/(slow|upload|answer-first|download/[0-9]+)"}}
    auth: required
"""


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    idp = Issuer(_RSA, _EC)
    await idp.start()
    yield idp
    assert idp.runner is not None
    await idp.runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    await app.start()
    yield app
    assert app.runner is not None
    await app.runner.cleanup()


GatewayFactory = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def make_gateway(
    tmp_path: Path, issuer: Issuer, upstream: Upstream
) -> AsyncIterator[GatewayFactory]:
    started: list[GatewayProcess] = []

    async def make(text: str | None = None, wait_keys: bool = True, **fmt: Any) -> GatewayProcess:
        values = {"upstream_port": upstream.port, "issuer_url": issuer.url, "upstream_timeout": "1s", **fmt}
        path = tmp_path / "gateway.yaml"
        path.write_text((text or BASE_CONFIG).format(**values))
        process = await start_gateway(path)
        started.append(process)
        if wait_keys:
            await wait_for(lambda: not process.keystore.missing())
        return process

    yield make
    for process in started:
        if not process.stopped.is_set():
            await process.stop()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> GatewayProcess:
    return await make_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def url(process: GatewayProcess, path: str) -> str:
    return f"http://127.0.0.1:{process.proxy_port}{path}"


def admin_url(process: GatewayProcess, path: str) -> str:
    return f"http://127.0.0.1:{process.admin_port}{path}"


@pytest.fixture
async def proc_factory(tmp_path: Path, issuer: Issuer, upstream: Upstream) -> AsyncIterator[object]:
    started: list[GatewaySubprocess] = []

    async def make(text: str = BASE_CONFIG, **fmt: object) -> tuple[GatewaySubprocess, int]:
        port, admin_port = free_port(), free_port()
        body = text.format(
            **{"upstream_port": upstream.port, "issuer_url": issuer.url, "upstream_timeout": "5s", **fmt}
        )
        body = body.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"', 1)
        body = body.replace('admin_listen: "127.0.0.1:0"', f'admin_listen: "127.0.0.1:{admin_port}"', 1)
        path = tmp_path / "gateway.yaml"
        path.write_text(body)
        proc = GatewaySubprocess(path, admin_port, tmp_path)
        started.append(proc)
        await proc.start()
        return proc, port

    yield make
    for proc in started:
        proc.kill()
