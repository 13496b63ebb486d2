"""The admin port: health, readiness, metrics, and what the running process knows (its config and keys).

Never reachable through the proxy port. /config and /keys show no secret, no key
material and no token: the config goes through config/redact.py, whose default
is to hide anything that is not plain data, and keys are described by kid and
type only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.config.redact import redacted
from gateway.local_reply import SERVER_HEADER
from gateway.metrics import CONTENT_TYPE
from gateway.process_log import rfc3339

if TYPE_CHECKING:
    from gateway.handler import Gateway
    from gateway.keystore import KeyStatus

SERVER = SERVER_HEADER[1]


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Server": SERVER, "Cache-Control": "no-store"},
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
            headers = {"Content-Type": CONTENT_TYPE, "Server": SERVER}
            return web.Response(body=self._gateway.metrics.exposition(), headers=headers)
        if path == "/config":
            return _json(200, self._config())
        if path == "/keys":
            runtime = self._gateway.runtime
            decryption = None if runtime.decryption is None else runtime.decryption.describe()
            issuers = [_key_status(issuer.status()) for issuer in runtime.keystore]
            return _json(200, {"issuers": issuers, "decryption": decryption})
        return _json(404, {"error": "not_found"})

    def _readyz(self) -> web.Response:
        gateway = self._gateway
        if gateway.draining:
            return _json(503, {"ready": False, "reason": "shutting down"})
        missing = gateway.runtime.keystore.missing()
        if missing:
            return _json(503, {"ready": False, "reason": "issuers without keys", "issuers_without_keys": missing})
        return _json(200, {"ready": True})

    def _config(self) -> dict[str, object]:
        """The effective config (defaults filled in, durations in seconds), secrets redacted."""
        runtime = self._gateway.runtime
        config = runtime.config
        body: dict[str, Any] = redacted(config)
        for meta in ("source", "sha256"):
            body.pop(meta, None)
        return {"file": config.source, "sha256": config.sha256, "loaded_at": rfc3339(runtime.loaded_at), "config": body}


def _key_status(status: KeyStatus) -> dict[str, object]:
    last = status.last_load
    view: dict[str, object] = redacted(status)  # plain data already; this also hides URL queries
    view["last_fetch"] = None if last is None else {"at": rfc3339(last[0]), "result": last[1]}
    del view["last_load"]
    view["next_refresh"] = None if status.next_load is None else rfc3339(status.next_load)
    del view["next_load"]
    return view
