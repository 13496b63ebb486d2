"""Every line a running gateway writes is one JSON object, through start, traffic, a failed key refresh,
a reload, a refused reload and SIGTERM; no token ever appears; local replies name no software version."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import aiohttp
from aiohttp.http import SERVER_SOFTWARE

from tests.proxy.conftest import BASE_CONFIG
from tests.proxy.harness import GatewaySubprocess, Issuer, wait_for

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        value = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(value, dict), line
        out.append(value)
    return out


def _process_log(proc: GatewaySubprocess) -> list[dict[str, Any]]:
    return _lines(proc.stderr_path.read_text())


def _has(proc: GatewaySubprocess, msg: str) -> bool:
    return any(line["msg"] == msg for line in _process_log(proc))


async def test_every_line_is_json_through_a_whole_life(proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    config = BASE_CONFIG.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n  log_level: debug\n")
    proc, port = await proc_factory(config)
    base = f"http://127.0.0.1:{port}"
    good = issuer.token()
    tokens = [good, issuer.token(exp=1), issuer.token(kid="rotated-away"), issuer.token(scope="read")]
    async with aiohttp.ClientSession() as http:
        # Traffic: allowed, refused (expired), refused by a claim rule, no token, public.
        async with http.get(f"{base}/api/x", headers={"Authorization": f"Bearer {good}"}) as resp:
            assert resp.status == 200
            assert resp.headers["Server"] == SERVER_SOFTWARE  # the upstream's own (an aiohttp app), kept
        async with http.get(f"{base}/api/x", headers={"Authorization": f"Bearer {tokens[1]}"}) as resp:
            assert resp.status == 401
            assert resp.headers["Server"] == "gateway"
        async with http.get(f"{base}/admin/x", headers={"Authorization": f"Bearer {tokens[3]}"}) as resp:
            assert resp.status == 403
        async with http.get(f"{base}/nowhere") as resp:
            assert resp.status == 404
            assert resp.headers["Server"] == "gateway"
        async with http.get(f"http://127.0.0.1:{proc.admin_port}/readyz") as resp:
            assert resp.headers["Server"] == "gateway"

        # A failed key refresh: the IdP answers 500 to the refetch an unknown kid triggers.
        issuer.failing = True
        async with http.get(f"{base}/api/x", headers={"Authorization": f"Bearer {tokens[2]}"}) as resp:
            assert resp.status == 401
        await wait_for(lambda: _has(proc, "jwks refresh failed"))
        issuer.failing = False

        # A reload, then a refused one.
        text = proc.config_path.read_text()
        proc.config_path.write_text(text.replace("X-User-Email", "X-User-Mail"))
        proc.signal(signal.SIGHUP)
        await wait_for(lambda: _has(proc, "config reloaded"))
        refused_text = text.replace("auth: public", "auth: sometimes", 1)
        refused_line = refused_text.splitlines().index("    auth: sometimes") + 1
        proc.config_path.write_text(refused_text)
        proc.signal(signal.SIGHUP)
        await wait_for(lambda: _has(proc, "config reload refused; the previous config keeps serving"))
        async with http.get(f"{base}/api/x", headers={"Authorization": f"Bearer {good}"}) as resp:
            assert resp.status == 200

    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0

    stdout, stderr = proc.stdout_path.read_text(), proc.stderr_path.read_text()
    for token in tokens:
        for part in token.split("."):  # not the token, nor any of its segments
            assert part not in stdout and part not in stderr
    access = _lines(stdout)
    assert [line["status"] for line in access] == [200, 401, 403, 404, 401, 200]
    log = _lines(stderr)
    for line in log:
        assert RFC3339_UTC.fullmatch(line["ts"]), line
        assert line["level"] in ("debug", "info", "warning", "error", "critical")
        assert line["logger"].startswith("gateway")
        assert isinstance(line["msg"], str)
    by_msg = {line["msg"]: line for line in log}
    assert by_msg["listening"]["proxy"] == f"127.0.0.1:{port}"
    assert by_msg["jwks keys loaded"]["issuer"] == "corp" and by_msg["jwks keys loaded"]["keys"] == 2
    failed = by_msg["jwks refresh failed"]
    assert failed["issuer"] == "corp" and failed["result"] == "http_error" and failed["kept_previous"] is True
    assert by_msg["config reloaded"]["routes"] == 6
    refused = by_msg["config reload refused; the previous config keeps serving"]
    assert [(i["path"], i["line"]) for i in refused["issues"]] == [("routes[0].auth", refused_line)]
    # log_level debug: each refused token names the check that failed, as a safe sentence.
    checks = [(line["route"], line["reason"], line["check"]) for line in log if line["msg"] == "token refused"]
    assert checks == [
        ("api", "expired", "The token has expired."),
        ("admin", "claim_rule", "claim rule on 'scope' does not hold"),
        ("api", "unknown_key", "No key matches the token's kid."),
    ]
    assert {"stopping: draining in-flight requests", "stopped"} <= by_msg.keys()
