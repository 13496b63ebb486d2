"""Slow clients and overload against the gateway (issue 13), bounded and on loopback.

Part 1, slow clients: the gateway (1 worker, pinned like in bench.py) with
header_timeout 5s and idle_timeout 10s; SLOW connections send a request head one
byte a second (slowloris) and IDLE connections send nothing, all opened at once,
while a separate open-loop client sends normal requests at 200 req/s throughout.
Reports when each slow head got its 408 and was closed, when each idle connection
was closed, what the normal requests saw, and the gateway's limit counters.

Part 2, overload: the peak of distinct ES256 tokens with the cache off (wrk, closed
loop), then twice that rate offered open-loop (bench/open_loop.py) to a gateway with
server.max_inflight; admitted (200) and shed (503) latencies reported separately.

    .venv/bin/python bench/slow_clients.py [--slow 5000] [--idle 5000]

Needs nginx and wrk (bench/run.sh installs them). Raises its own open-file limit (the
gateway child inherits it). Prints one JSON object and writes bench/results/slow-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_bench import start_gateway, start_nginx

import bench as B  # the shared harness next to this file

HEADER_TIMEOUT = 5.0
IDLE_TIMEOUT = 10.0


def raise_fd_limit(want: int) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # root may raise the hard limit
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def metrics(admin_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(gateway_(?:connections_rejected_total|requests_shed_total|open_connections|requests_total)\S*) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class _Watched(asyncio.Protocol):
    """A client connection that records when it opened, what it got and when the gateway closed it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.opened = time.monotonic()
        self.closed_at: float | None = None
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.opened = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed_at = time.monotonic()


async def _open_many(port: int, n: int) -> list[_Watched]:
    loop = asyncio.get_running_loop()
    conns: list[_Watched] = []
    for start in range(0, n, 250):  # batches: the listen backlog is 1024
        batch = await asyncio.gather(
            *(loop.create_connection(_Watched, "127.0.0.1", port) for _ in range(min(250, n - start))),
            return_exceptions=True,
        )
        conns.extend(p for r in batch if not isinstance(r, BaseException) for p in [r[1]])
    return conns


def _spread(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(values[0], 2), "median": round(values[len(values) // 2], 2), "max": round(values[-1], 2)}


async def slow_clients(port: int, admin_port: int, token_file: Path, n_slow: int, n_idle: int) -> dict[str, Any]:
    normal = subprocess.Popen(
        B.taskset(B.LOAD_CPUS, [sys.executable, str(B.HERE / "open_loop.py"), "--port", str(port), "--tokens", str(token_file),
                                "--rate", "200", "--duration", str(IDLE_TIMEOUT + 8), "--per-status"]),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    t0 = time.monotonic()
    slow = await _open_many(port, n_slow)
    idle = await _open_many(port, n_idle)
    opened_in = time.monotonic() - t0
    samples = []
    head = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Slowloris: "
    sent = 0
    while time.monotonic() - t0 < IDLE_TIMEOUT + 6:
        # One more byte of each slow head a second; never the end of it.
        for c in slow:
            if c.closed_at is None and c.transport is not None:
                c.transport.write(head[sent : sent + 1] if sent < len(head) else b"x")
        sent += 1
        m = metrics(admin_port)
        samples.append({"t": round(time.monotonic() - t0, 1), "open": m.get("gateway_open_connections"),
                        "slow_open": sum(c.closed_at is None for c in slow), "idle_open": sum(c.closed_at is None for c in idle)})  # fmt: skip
        await asyncio.sleep(1.0)
    out, _ = await asyncio.to_thread(normal.communicate)
    final = metrics(admin_port)
    for c in slow + idle:
        if c.transport is not None:
            c.transport.close()
    got_408 = [c for c in slow if c.data.startswith(b"HTTP/1.1 408 ")]
    return {
        "slow_connections": len(slow), "idle_connections": len(idle), "opened_in_s": round(opened_in, 2),
        "header_timeout_s": HEADER_TIMEOUT, "idle_timeout_s": IDLE_TIMEOUT,
        "slow_got_408": len(got_408), "slow_closed": sum(c.closed_at is not None for c in slow),
        "slow_closed_after_s": _spread([c.closed_at - c.opened for c in slow if c.closed_at is not None]),
        "idle_closed": sum(c.closed_at is not None for c in idle),
        "idle_closed_after_s": _spread([c.closed_at - c.opened for c in idle if c.closed_at is not None]),
        "normal_requests": json.loads(out.strip().splitlines()[-1]),
        "gateway_metrics_end": final, "samples": samples,
    }  # fmt: skip


def overload(procs: B.Procs, tmp: Path, up_port: int, keys: dict[str, Any], duration: int, max_inflight: int) -> dict[str, Any]:
    target = start_gateway(procs, tmp, "gateway-overload", up_port, keys["jwks"], cache=False,
                           server_keys=f"\n  max_inflight: {max_inflight}")
    port, admin = target.port, target.admin_port
    assert admin is not None
    spec = B.WORKLOADS["es256-distinct"]
    script = B.lua_script(tmp, "es256-distinct", spec, keys["files"]["es256"], paced=False)
    B.run_wrk(target, script, 2, B.CONNECTIONS)  # warm-up
    peak = B.run_wrk(target, script, duration, B.CONNECTIONS)
    rate = round(2 * peak["rps"])
    argv = B.taskset(B.LOAD_CPUS, [sys.executable, str(B.HERE / "open_loop.py"), "--port", str(port), "--tokens",
                                   str(keys["files"]["es256"]), "--rate", str(rate), "--duration", str(duration),
                                   "--connections", "512", "--preopen", "256", "--per-status"])  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    # The generator's own floor at that rate: the nginx upstream alone, no gateway in between.
    floor_argv = B.taskset(B.LOAD_CPUS, [sys.executable, str(B.HERE / "open_loop.py"), "--port", str(up_port),
                                         "--rate", str(rate), "--duration", str(duration), "--connections", "512", "--preopen", "256"])  # fmt: skip
    floor = subprocess.run(floor_argv, capture_output=True, text=True, timeout=duration + 120)
    return {"workload": "es256-distinct, cache off", "max_inflight": max_inflight, "peak_rps_closed_loop": round(peak["rps"]),
            "peak_p99_ms": peak["lat_p99_us"] / 1000, "offered_rps": rate, "open_loop": json.loads(r.stdout.strip().splitlines()[-1]),
            "generator_floor_upstream_only": json.loads(floor.stdout.strip().splitlines()[-1]),
            "gateway_metrics_end": metrics(admin)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=5000)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per overload measurement")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--skip-slow", action="store_true", help="only the overload part")
    args = parser.parse_args()
    limit = raise_fd_limit(args.slow + args.idle + 4096)
    n_slow, n_idle = args.slow, args.idle
    if limit < n_slow + n_idle + 1024:  # what the machine allows
        n_slow = n_idle = max(0, (limit - 1024) // 2)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="gateway-slow-"))
    os.chmod(tmp, 0o755)  # noqa: S103 -- nginx workers read the config and files here
    procs = B.Procs()
    try:
        keys = B.make_keys_and_tokens(tmp)
        up_port = start_nginx(procs, tmp).port
        server_keys = (f"\n  header_timeout: {HEADER_TIMEOUT:.0f}s\n  idle_timeout: {IDLE_TIMEOUT:.0f}s"
                       f"\n  max_connections: {n_slow + n_idle + 1000}")  # fmt: skip
        gateway = start_gateway(procs, tmp, "gateway-slow", up_port, keys["jwks"], server_keys=server_keys)
        port, admin = gateway.port, gateway.admin_port
        assert admin is not None
        B.log(f"slow clients: {n_slow} slowloris + {n_idle} idle (open-file limit {limit})")
        part1 = {} if args.skip_slow else asyncio.run(slow_clients(port, admin, keys["files"]["rs256_single"], n_slow, n_idle))
        B.log(f"slow clients: {json.dumps({k: v for k, v in part1.items() if k != 'samples'})}")
        part2 = overload(procs, tmp, up_port, keys, args.duration, args.max_inflight)
        B.log(f"overload: {json.dumps(part2)}")
        report = {"started": stamp, "open_file_limit": limit, "slow_clients": part1, "overload": part2,
                  "loadavg_end": os.getloadavg()}  # fmt: skip
        out = B.HERE / "results" / f"slow-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return 0
    finally:
        procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
