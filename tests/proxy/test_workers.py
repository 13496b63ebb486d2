"""server.workers: several processes share the ports, metrics sum across them, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import BASE_CONFIG
from tests.proxy.harness import GatewaySubprocess, Issuer, Upstream, free_port, wait_for


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def test_two_workers_share_ports_and_metrics(tmp_path: Path, issuer: Issuer, upstream: Upstream) -> None:
    port, admin_port = free_port(), free_port()
    text = BASE_CONFIG.format(upstream_port=upstream.port, issuer_url=issuer.url, upstream_timeout="5s")
    text = text.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"', 1)
    text = text.replace('admin_listen: "127.0.0.1:0"', f'admin_listen: "127.0.0.1:{admin_port}"', 1)
    text = text.replace("  shutdown_grace: 2s\n", "  shutdown_grace: 2s\n  workers: 2\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    proc = GatewaySubprocess(path, admin_port, tmp_path)
    try:
        await proc.start()
        assert proc.proc is not None
        await wait_for(lambda: len(_children(proc.proc.pid)) == 2)  # type: ignore[union-attr]
        headers = {"Authorization": f"Bearer {issuer.token()}"}

        async def one(http: aiohttp.ClientSession) -> int:
            async with http.get(f"http://127.0.0.1:{port}/api/x", headers=headers) as resp:
                return resp.status

        # A fresh connection per request, so the kernel spreads them over both workers.
        statuses = []
        for _ in range(60):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                statuses.append(await one(http))
        assert statuses == [200] * 60

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
                text = await resp.text()
        total = sum(
            s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "gateway_requests_total" and s.labels.get("route") == "api"
        )
        assert total == 60  # whichever worker answered the scrape, it counts both
        build = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "gateway_build_info"]
        assert len(build) == 1

        # A worker that dies is replaced.
        victim = _children(proc.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: victim not in _children(proc.proc.pid) and len(_children(proc.proc.pid)) == 2, timeout=10)  # type: ignore[union-attr]

        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0
        await asyncio.sleep(0)
    finally:
        proc.kill()
