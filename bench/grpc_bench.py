"""HTTP/2 and gRPC (issue 15): gRPC unary calls through the gateway next to Envoy jwt_authn, and h2c against HTTP/1.1.

Reuses bench.py's pieces (keys and tokens, the Envoy and gateway configs, the nginx
upstream, the process harness). The load generator is h2load (Debian's
nghttp2-client), pinned with the upstreams on the load core; each proxy gets the
other core. Per round, targets alternate order:

    grpc-unary    POST /bench.Echo/Unary (a 100-byte message, one RS256 token) to a
                  grpcio service: gateway (server.http2, upstream.protocol h2c)
                  vs Envoy (codec AUTO, an HTTP/2 cluster), both with the verdict cache
    http-h2c      GET / to nginx through the gateway, h2c with prior knowledge
    http-h1       the same through the gateway over HTTP/1.1 (h2load --h1)

p99 comes from h2load's per-request log. One token, so both proxies answer from
their caches (jwt_cache_config on Envoy).

    BENCH_ROUNDS=3 BENCH_DURATION=10 bench/.venv-bench/bin/python bench/grpc_bench.py
    (make bench-grpc installs h2load and Envoy, then runs this)

Writes bench/results/grpc-<timestamp>.json and prints a Markdown section for RESULTS.md.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_bench import start_nginx

import bench as B  # the shared harness next to this file

CONNECTIONS = int(os.environ.get("BENCH_H2_CONNECTIONS", "32"))
STREAMS = int(os.environ.get("BENCH_H2_STREAMS", "1"))  # per connection: HTTP/1.1 can have only one
MESSAGE = b"\x00" + (100).to_bytes(4, "big") + b"m" * 100  # gRPC's length-prefixed message (uncompressed)

BACKEND = """
import asyncio, sys, grpc
async def main() -> None:
    server = grpc.aio.server()
    async def unary(request: bytes, context: object) -> bytes:
        return request
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})])
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""

CHECK = """
import sys, grpc
with grpc.insecure_channel("127.0.0.1:" + sys.argv[1]) as ch:
    call = ch.unary_unary("/bench.Echo/Unary")
    assert call(b"ping", metadata=(("authorization", "Bearer " + sys.argv[2]),), timeout=5) == b"ping"
    try:
        call(b"ping", timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc.code()
    else:
        raise AssertionError("no token passed")
print("ok")
"""


def envoy_grpc_conf(tmp: Path, name: str, port: int, admin: int, up_port: int, jwks: Path) -> Path:
    """bench.py's Envoy (same jwt_authn provider, cache on), accepting h2c and speaking HTTP/2 upstream."""
    conf = B.envoy_conf(tmp, name, port, admin, up_port, jwks, cache=True)
    text = conf.read_text().replace("codec_type: HTTP1", "codec_type: AUTO")
    text = text.replace("    connect_timeout: 2s\n", """    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
""")
    conf.write_text(text)
    return conf


def start_envoy(procs: B.Procs, tmp: Path, name: str, up_port: int, jwks: Path) -> B.Target:
    port, admin = B.free_port(), B.free_port()
    conf = envoy_grpc_conf(tmp, name, port, admin, up_port, jwks)
    p = procs.start(name, B.taskset(B.PROXY_CPUS, [str(B.ENVOY_BIN), "-c", str(conf), "--concurrency", "1",
                                                   "--disable-hot-restart", "--log-level", "warn"]),
                    subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
    B.wait_http(f"http://127.0.0.1:{admin}/ready", 30, p)
    return B.Target(name, "envoy", port, admin, p, B.PROXY_CPUS, conf)


def start_gateway(procs: B.Procs, tmp: Path, name: str, up_port: int, jwks: Path, *, h2c_upstream: bool) -> B.Target:
    port, admin = B.free_port(), B.free_port()
    conf = B.gateway_conf(tmp, name, port, admin, up_port, jwks, None)
    text = conf.read_text().replace("  shutdown_grace: 1s", "  shutdown_grace: 1s\n  http2: true")
    if h2c_upstream:
        text = text.replace(f'  url: "http://127.0.0.1:{up_port}"', f'  url: "http://127.0.0.1:{up_port}"\n  protocol: h2c')
    conf.write_text(text)
    p = procs.start(name, B.taskset(B.PROXY_CPUS, [str(B.GATEWAY_BIN), "run", "-c", str(conf)]),
                    subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
    B.wait_http(f"http://127.0.0.1:{admin}/readyz", 30, p)
    return B.Target(name, "gateway", port, admin, p, B.PROXY_CPUS, conf)


def h2load(target: B.Target, tmp: Path, path: str, token: str, duration: int, *, grpc: bool, h1: bool = False) -> dict[str, Any]:
    """One h2load run: req/s, p50/p99 from its per-request log, non-2xx count, the proxy's CPU per request."""
    log_file = tmp / "h2load.log"
    argv = ["h2load", "-D", str(duration), "--warm-up-time", "1", "-c", str(CONNECTIONS), "-m", str(STREAMS),
            "-t", "1", "--log-file", str(log_file), "-H", f"authorization: Bearer {token}"]  # fmt: skip
    if grpc:
        body = tmp / "grpc-message.bin"
        body.write_bytes(MESSAGE)
        argv += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if h1:
        argv.append("--h1")
    argv.append(f"http://127.0.0.1:{target.port}{path}")
    cpu0 = B.proc_tree_cpu_seconds(target.proc.pid) if target.proc else 0.0
    r = subprocess.run(B.taskset(B.LOAD_CPUS, argv), capture_output=True, text=True, timeout=duration + 60)
    cpu = (B.proc_tree_cpu_seconds(target.proc.pid) if target.proc else 0.0) - cpu0
    out = r.stdout
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if rps is None or done is None or codes is None:
        raise RuntimeError(f"h2load output not understood: {out[-800:]} {r.stderr[-400:]}")
    latencies = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line.count("\t") >= 2)
    requests = int(done.group(1))
    return {
        "rps": float(rps.group(1)), "requests": requests, "failed": int(done.group(3)) + int(done.group(4)),
        "non_2xx": sum(int(codes.group(i)) for i in (2, 3, 4)),
        "p50_ms": latencies[len(latencies) // 2] / 1000 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1000 if latencies else None,
        "cpu_us_per_request": cpu / max(1, requests) * 1e6,
    }  # fmt: skip


def check_grpc(target: B.Target, token: str) -> None:
    r = subprocess.run([str(B.GATEWAY_PY), "-c", CHECK, str(target.port), token], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "ok" not in r.stdout:
        raise RuntimeError(f"{target.name}: gRPC check failed: {r.stderr[-600:]}")


def main() -> int:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="gateway-grpc-bench-"))
    os.chmod(tmp, 0o755)  # noqa: S103 -- nginx workers read the config and files here
    procs = B.Procs()
    cells: list[dict[str, Any]] = []
    try:
        keys = B.make_keys_and_tokens(tmp)
        token = keys["sets"]["rs256_single"][0]
        grpc_port = B.free_port()
        procs.start("grpc-backend", B.taskset(B.LOAD_CPUS, [str(B.GATEWAY_PY), "-c", BACKEND, str(grpc_port)]),
                    subprocess.DEVNULL, open(tmp / "grpc-backend.err", "wb"))  # fmt: skip
        time.sleep(1.5)
        nginx = start_nginx(procs, tmp)
        targets = {
            "gateway": start_gateway(procs, tmp, "gateway-grpc", grpc_port, keys["jwks"], h2c_upstream=True),
            "envoy": start_envoy(procs, tmp, "envoy-grpc", grpc_port, keys["jwks"]),
            "gateway-http": start_gateway(procs, tmp, "gateway-http", nginx.port, keys["jwks"], h2c_upstream=False),
        }
        for name in ("gateway", "envoy"):
            check_grpc(targets[name], token)
        plan = [("grpc-unary", "gateway"), ("grpc-unary", "envoy"), ("http-h2c", "gateway-http"), ("http-h1", "gateway-http")]
        for rnd in range(1, B.ROUNDS + 1):
            for workload, name in plan if rnd % 2 else list(reversed(plan)):
                grpc = workload == "grpc-unary"
                res = h2load(targets[name], tmp, "/bench.Echo/Unary" if grpc else "/", token, B.DURATION,
                             grpc=grpc, h1=workload == "http-h1")  # fmt: skip
                res.update(round=rnd, workload=workload, target=name)
                cells.append(res)
                B.log(f"round {rnd} {workload:10} {name:13} {res['rps']:8.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                      f"p99 {res['p99_ms']:.2f} ms  {res['cpu_us_per_request']:6.1f} us CPU/req  failed {res['failed']}  non-2xx {res['non_2xx']}")  # fmt: skip
        report = {"started": stamp, "rounds": B.ROUNDS, "duration_s": B.DURATION, "connections": CONNECTIONS,
                  "streams_per_connection": STREAMS, "loadavg_end": os.getloadavg(), "cells": cells}  # fmt: skip
        out = B.HERE / "results" / f"grpc-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(markdown(report))
        return 0
    finally:
        procs.stop_all()


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for workload, name in (("grpc-unary", "gateway"), ("grpc-unary", "envoy"), ("http-h2c", "gateway-http"), ("http-h1", "gateway-http")):
        cs = [c for c in report["cells"] if c["workload"] == workload and c["target"] == name]
        med = {k: statistics.median(c[k] for c in cs) for k in ("rps", "p99_ms", "cpu_us_per_request")}
        per_round = ", ".join(format(c["rps"], ".0f") for c in cs)
        bad = sum(c["failed"] + c["non_2xx"] for c in cs)
        rows.append(f"| {workload} | {name} | {med['rps']:.0f} | {med['p99_ms']:.2f} | {med['cpu_us_per_request']:.0f} | "
                    f"{per_round} | {bad} |")  # fmt: skip
    head = ("| workload | target | req/s (median) | p99 ms (median) | proxy CPU µs/req | req/s per round | failed + non-2xx |\n"
            "|---|---|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
