"""curl --http2-prior-knowledge gets the same answers as curl --http1.1 for the SPEC's table (`make check-http2`)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.server import GatewayProcess
from tests.proxy.conftest import GatewayFactory
from tests.proxy.harness import Issuer
from tests.proxy.test_http2 import HTTP2_CONFIG


async def curl(port: int, path: str, version: str, headers: list[str]) -> tuple[str, int, dict[str, str], bytes]:
    """(the HTTP version curl used, status, lower-cased headers, body) of one request."""
    argv = ["curl", "-sS", "-i", version, f"http://127.0.0.1:{port}{path}", "-w", "\n%{http_version}"]
    for header in headers:
        argv += ["-H", header]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    raw, _, used = out.rpartition(b"\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    return used.decode(), int(status_line.split()[1]), fields, body


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> GatewayProcess:
    return await make_gateway(HTTP2_CONFIG)


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/api/x", "valid", 200), ("/api/x", None, 401), ("/api/x", "garbage", 401),
        ("/admin/x", "valid", 403), ("/nowhere", None, 404), ("/public/..%2fadmin", None, 400),
        ("/public/x", None, 200),
    ],
)
async def test_same_answers_over_http2_and_http11(
    gateway: GatewayProcess, issuer: Issuer, path: str, token: str | None, status: int
) -> None:
    headers = [] if token is None else [f"Authorization: Bearer {issuer.token() if token == 'valid' else 'a.b.c'}"]
    used2, status2, fields2, body2 = await curl(gateway.proxy_port, path, "--http2-prior-knowledge", headers)
    used1, status1, fields1, body1 = await curl(gateway.proxy_port, path, "--http1.1", headers)
    assert (used2, used1) == ("2", "1.1")
    assert status2 == status1 == status
    assert fields2.get("www-authenticate") == fields1.get("www-authenticate")
    if status != 200:
        refusal2, refusal1 = json.loads(body2), json.loads(body1)
        assert (refusal2["error"], refusal2["error_description"]) == (refusal1["error"], refusal1["error_description"])
    elif path.startswith("/api"):
        seen = {name.lower(): value for name, value in json.loads(body2)["headers"]}
        assert seen["x-user-id"] == "alice"
