"""server.workers: several processes share the ports, metrics sum across them, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import BASE_CONFIG
from tests.proxy.harness import Issuer, Upstream, children, process_state, start_workers, wait_for


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

        # A request is counted just after its answer is written, so the last one may still be on
        # its way into the shared metrics when the client has its answer: scrape until all are in.
        async def scrape() -> tuple[str, float]:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
                    text = await resp.text()
            total = sum(
                s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "gateway_requests_total" and s.labels.get("route") == "api"
            )
            return text, total

        deadline = asyncio.get_running_loop().time() + 5
        text, total = await scrape()
        while total < 60 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            text, total = await scrape()
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
        # A zombie is gone too (its parent, the killed supervisor, no longer reaps it; init does).
        return process_state(pid) in (None, "Z")

    await wait_for(lambda: all(gone(pid) for pid in workers), timeout=10)
    # Nothing listens on the proxy port any more (read from the kernel's table: a test connect
    # could meet its own ephemeral socket on that port number and look like a listener). No process
    # holds it once the workers are gone, but the kernel may list it for a moment while it closes.
    try:
        await wait_for(lambda: port not in _listening_ports(), timeout=5)
    except AssertionError:
        raise AssertionError(_holders(port)) from None


def _listening_sockets() -> dict[int, set[str]]:
    """Listening TCP ports, each with the socket inodes listening on it."""
    ports: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.setdefault(int(fields[1].rsplit(":", 1)[1], 16), set()).add(fields[9])
    return ports


def _listening_ports() -> set[int]:
    return set(_listening_sockets())


def _holders(port: int) -> str:
    """For a failure message: which processes hold a socket listening on `port`."""
    inodes = {f"socket:[{i}]" for i in _listening_sockets().get(port, ())}
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                pid = fd.parent.parent.name
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                found.append(f"pid {pid} ({process_state(int(pid))}): {cmd}")
        except OSError:
            continue
    return f"port {port} still listening, held by: {found or 'no process (closing in the kernel)'}"
