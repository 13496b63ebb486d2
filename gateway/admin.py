"""The admin port: /healthz, /readyz and /metrics, never reachable through the proxy port."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.local_reply import SERVER_HEADER
from gateway.metrics import CONTENT_TYPE

SERVER = SERVER_HEADER[1]

if TYPE_CHECKING:
    from gateway.handler import Gateway


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", "Server": SERVER}
    )


class Admin:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed"})
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            return web.Response(body=self._gateway.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE, "Server": SERVER})
        return _json(404, {"error": "not_found"})

    def _readyz(self) -> web.Response:
        gateway = self._gateway
        if gateway.draining:
            return _json(503, {"ready": False, "reason": "shutting down"})
        missing = gateway.runtime.keystore.missing()
        if missing:
            return _json(503, {"ready": False, "reason": "issuers without keys", "issuers_without_keys": missing})
        return _json(200, {"ready": True})
