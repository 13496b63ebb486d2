"""server.workers: several processes share the ports, metrics sum across them, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import BASE_CONFIG
from tests.proxy.harness import Issuer, Upstream, children, start_workers, wait_for


async def test_two_workers_share_ports_and_metrics(tmp_path: Path, issuer: Issuer, upstream: Upstream) -> None:
    proc, port, admin_port = await start_workers(tmp_path, BASE_CONFIG, issuer, upstream)
    try:
        assert proc.proc is not None
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
        victim = children(proc.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: victim not in children(proc.proc.pid) and len(children(proc.proc.pid)) == 2, timeout=10)  # type: ignore[union-attr]

        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0
        await asyncio.sleep(0)
    finally:
        proc.kill()


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, issuer: Issuer, upstream: Upstream) -> None:
    """SIGKILL leaves the supervisor no chance to forward anything: the workers still stop, and free the ports."""
    proc, port, _ = await start_workers(tmp_path, BASE_CONFIG, issuer, upstream)
    assert proc.proc is not None
    workers = children(proc.proc.pid)
    assert len(workers) == 2
    proc.kill()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie is gone too (its parent, the killed supervisor, no longer reaps it; init does,
        # perhaps right between the kill above and this read).
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    await wait_for(lambda: all(gone(pid) for pid in workers), timeout=10)
    # Nothing listens on the proxy port any more (read from the kernel's table: a test connect
    # could meet its own ephemeral socket on that port number and look like a listener).
    assert port not in _listening_ports()


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":  # TCP_LISTEN
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
