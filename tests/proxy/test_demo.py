"""`gateway demo`: its printed curl lines give 200, 401 and 403 as they say."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.proxy.harness import free_port


@contextlib.asynccontextmanager
async def running_demo(tmp_path: Path, *flags: str) -> AsyncIterator[str]:
    """`gateway demo` as a child process; yields the instructions it printed."""
    out_path = tmp_path / "demo.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", *flags], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "Ctrl-C" not in out_path.read_text():
            assert proc.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, "demo did not print its instructions"
            await asyncio.sleep(0.05)
        yield out_path.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_demo_curl_lines_do_what_they_say(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    async with running_demo(tmp_path, "--port", str(port), "--admin-port", str(admin_port)) as text:
        expectations = re.findall(r"^# (\d{3}): .*\n(curl .*)$", text, flags=re.M)
        assert [code for code, _ in expectations] == ["200", "401", "403", "200", "200", "200"]
        seen_encrypted = False
        async with aiohttp.ClientSession() as http:
            for code, line in expectations:
                argv = shlex.split(line)
                headers = {}
                if "-H" in argv:
                    name, _, value = argv[argv.index("-H") + 1].partition(": ")
                    headers[name] = value
                async with http.get(argv[-1], headers=headers) as resp:
                    assert resp.status == int(code), line
                    if code == "200" and "api/orders" in line:
                        body = await resp.json()
                        # The last line carries an encrypted token (five segments) for carol.
                        encrypted = headers["Authorization"].count(".") == 4
                        assert body["headers"]["X-User-Id"] == ("carol" if encrypted else "alice")
                        seen_encrypted = seen_encrypted or encrypted
            await _dpop_lines_do_what_they_say(text, http)
        assert seen_encrypted
        # The printed explain lines: the read-only token passes on /api and fails /admin's scope rule;
        # the encrypted one passes, with its decryption step shown.
        explains = re.findall(r"^gateway (explain .*)$", text, flags=re.M)
        assert len(explains) == 3
        results = [
            subprocess.run([sys.executable, "-m", "gateway", *shlex.split(line)], capture_output=True, text=True, timeout=60)
            for line in explains
        ]
        assert [r.returncode for r in results] == [0, 1, 0]
        assert "allowed: the request is forwarded upstream" in results[0].stdout
        assert 'FAIL scope contains "admin": value "read"' in results[1].stdout
        assert "403 insufficient_scope" in results[1].stdout
        assert "decryption (JWE)\n  ok   compact JWE: alg RSA-OAEP-256, enc A256GCM" in results[2].stdout
        assert "X-User-Id: carol" in results[2].stdout


async def test_demo_authz_checks_do_what_they_say(tmp_path: Path) -> None:
    port, admin_port, authz_port = free_port(), free_port(), free_port()
    flags = ("--port", str(port), "--admin-port", str(admin_port), "--authz", "--authz-port", str(authz_port))
    async with running_demo(tmp_path, *flags) as text:
        checks = [(c, line) for c, line in re.findall(r"^# (\d{3}): .*\n(curl .*)$", text, flags=re.M)
                  if f":{authz_port}/" in line]
        assert [code for code, _ in checks] == ["200", "403", "200", "401"]
        async with aiohttp.ClientSession() as http:
            for code, line in checks:
                argv = shlex.split(line)
                headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
                async with http.get(argv[-1], headers=headers) as resp:
                    assert resp.status == int(code), line
                    if code == "200":
                        assert resp.headers["X-User-Id"] in ("alice", "bob") and await resp.read() == b""


async def _dpop_lines_do_what_they_say(text: str, http: aiohttp.ClientSession) -> None:
    """The DPoP example: the proof command runs as printed (no curl needed), and the bound token
    passes with its proof and is refused as a bearer token."""
    token = re.search(r"^TOKEN=(\S+)$", text, flags=re.M)
    with_proof = re.search(r"^# DPoP 200: .*\ncurl .*\$\((python -m gateway dpop-proof [^)]*)\)\" (\S+)$", text, flags=re.M)
    as_bearer = re.search(r"^# DPoP 401: .*\ncurl .* (\S+)$", text, flags=re.M)
    assert token and with_proof and as_bearer, text
    command = shlex.split(with_proof.group(1).replace("$TOKEN", token.group(1)))
    proof = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, check=True).stdout.strip()
    headers = {"Authorization": f"DPoP {token.group(1)}", "DPoP": proof}
    async with http.get(with_proof.group(2), headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["headers"]["X-User-Id"] == "dave"
    async with http.get(with_proof.group(2), headers=headers) as resp:
        assert resp.status == 401  # the same proof again is a replay
    async with http.get(as_bearer.group(1), headers={"Authorization": f"Bearer {token.group(1)}"}) as resp:
        assert resp.status == 401
