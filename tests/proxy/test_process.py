"""The gateway as its own process: flat memory while streaming, SIGTERM drain, reload by SIGHUP and file change."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.proxy.harness import Issuer, Upstream, wait_for

MB = 1 << 20


async def test_streaming_keeps_memory_flat(proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    proc, port = await proc_factory()
    auth = {"Authorization": f"Bearer {issuer.token()}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/download/{MB}", headers=auth) as resp:
            assert resp.status == 200  # warm up pools and code paths before the baseline
            await resp.read()
        baseline = proc.peak_rss_kib()

        received = 0
        async with http.get(f"http://127.0.0.1:{port}/download/{200 * MB}", headers=auth) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):
                received += len(chunk)
        assert received == 200 * MB

        async def body() -> AsyncIterator[bytes]:
            block = b"u" * (1 << 16)
            for _ in range(200 * MB // len(block)):
                yield block

        async with http.post(
            f"http://127.0.0.1:{port}/upload", data=body(), headers={**auth, "Content-Length": str(200 * MB)}
        ) as resp:
            assert resp.status == 200
            assert json.loads(await resp.read()) == {"received": 200 * MB}
    growth_mib = (proc.peak_rss_kib() - baseline) / 1024
    print(f"peak RSS: baseline {baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB")
    assert growth_mib < 32, f"peak RSS grew {growth_mib:.1f} MiB while streaming 400 MiB"


async def test_sigterm_drains_in_flight_then_exits_zero(proc_factory, issuer: Issuer, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    proc, port = await proc_factory()
    auth = {"Authorization": f"Bearer {issuer.token()}"}
    async with aiohttp.ClientSession() as http:
        slow = asyncio.ensure_future(http.get(f"http://127.0.0.1:{port}/slow?delay=1.5", headers=auth))
        await asyncio.wait_for(upstream.slow_started.wait(), 5)
        proc.signal(signal.SIGTERM)

        async def readiness() -> int:
            async with http.get(f"http://127.0.0.1:{proc.admin_port}/readyz") as r:
                return r.status

        # Readiness turns 503 while the slow request is still in flight.
        for _ in range(100):
            try:
                if await readiness() == 503:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("readyz never turned 503")
        assert not slow.done()
        # New connections are refused once the listener is closed.
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(f"http://127.0.0.1:{port}/public/x")
        resp = await slow
        assert resp.status == 200
        assert json.loads(await resp.read()) == {"slept": 1.5}
        resp.release()
    assert await proc.wait() == 0


async def _status(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
            return resp.status


async def _metric(admin_port: int, needle: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
            text = await resp.text()
    return next((line for line in text.splitlines() if line.startswith(needle)), "")


async def test_sighup_reload_and_refused_invalid_config(proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    proc, port = await proc_factory()
    assert await _status(port, "/public/x") == 200
    text = proc.config_path.read_text()
    # A valid change: /public now requires a token.
    proc.config_path.write_text(text.replace("    auth: public\n", "    auth: required\n", 1))
    proc.signal(signal.SIGHUP)
    await wait_for_async(lambda: _status(port, "/public/x"), 401)
    assert (await _metric(proc.admin_port, 'gateway_config_reloads_total{result="ok"}')).endswith(("1.0", "2.0"))
    # An invalid change is refused, counted, and the previous config keeps serving.
    proc.config_path.write_text(text.replace("auth: public", "auth: sometimes", 1))
    proc.signal(signal.SIGHUP)
    await wait_for_async(lambda: _metric(proc.admin_port, 'gateway_config_reloads_total{result="error"}'), None,
                         check=lambda line: not line.endswith(" 0.0"))
    assert await _status(port, "/public/x") == 401
    assert "auth" in proc.stderr_path.read_text()


async def test_configmap_symlink_swap_reloads(tmp_path: Path, proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    proc, port = await proc_factory()
    original = proc.config_path.read_text()
    # Lay the config out the way the kubelet does: file -> ..data/file, ..data -> ..2026_x
    mount = tmp_path / "mount"
    first = mount / "..2026_01"
    first.mkdir(parents=True)
    (first / "gateway.yaml").write_text(original)
    os.symlink("..2026_01", mount / "..data")
    os.symlink("..data/gateway.yaml", mount / "gateway.yaml")
    proc.kill()
    proc.config_path = mount / "gateway.yaml"
    await proc.start()
    assert await _status(port, "/public/x") == 200
    second = mount / "..2026_02"
    second.mkdir()
    (second / "gateway.yaml").write_text(original.replace("    auth: public\n", "    auth: required\n", 1))
    os.symlink("..2026_02", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap
    await wait_for_async(lambda: _status(port, "/public/x"), 401)


async def wait_for_async(probe, expected, check=None, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if (check(value) if check else value == expected):
            return
        if loop.time() > deadline:
            raise AssertionError(f"last value {value!r}")
        await asyncio.sleep(0.05)


async def _grown_by(items: list[int], n: int) -> None:
    start = len(items)
    await wait_for(lambda: len(items) >= start + n)


async def test_reload_under_steady_load_fails_no_request(make_gateway, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    from tests.proxy.conftest import url

    gateway = await make_gateway()
    token = issuer.token()
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {token}"}) as resp:
                    await resp.read()
                    statuses.append(resp.status)

    workers = [asyncio.ensure_future(load()) for _ in range(4)]
    path = Path(gateway.config_path)
    text = path.read_text()
    for i in range(5):
        await _grown_by(statuses, 20)
        # Alternate between two valid configs (a claim header renamed), each a full reload.
        path.write_text(text.replace("X-User-Email", f"X-User-Mail-{i}"))
        assert await gateway.reload()
    stop.set()
    await asyncio.gather(*workers)
    assert len(statuses) > 100
    assert set(statuses) == {200}
    assert 'gateway_config_reloads_total{result="ok"} 5.0' in gateway.metrics.exposition().decode()


async def test_no_token_in_any_log_line(proc_factory, issuer: Issuer) -> None:  # type: ignore[no-untyped-def]
    proc, port = await proc_factory()
    good, expired = issuer.token(), issuer.token(exp=1, iat=0)
    forged = good[:-6] + "AAAAAA"
    async with aiohttp.ClientSession() as http:
        for token, path in ((good, "/api/x"), (expired, "/api/x"), (forged, "/api/x"), (good, f"/api/x?access_token={good}")):
            async with http.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}) as r:
                await r.read()
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
    logs = proc.stdout_path.read_text() + proc.stderr_path.read_text()
    assert len([line for line in proc.stdout_path.read_text().splitlines() if line.startswith("{")]) == 4
    for token in (good, expired, forged):
        for part in token.split("."):
            assert part not in logs
