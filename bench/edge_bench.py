"""The server edge's cells of the bench (issue 13), the gateway next to Envoy: one run, interleaved rounds.

Reuses bench.py's pieces (keys and tokens, nginx / Envoy / gateway configs, wrk scripts, the
process harness). Per round, each workload loads its pair of targets in turn:

    rs256-single    gateway (cache on)        vs envoy-cache   (jwt_cache_config)
    rs256-distinct  gateway-nocache           vs envoy-nocache
    es256-distinct  gateway-nocache           vs envoy-nocache
    invalid-sig     gateway-nocache           vs envoy-nocache

and records req/s, p99 and the proxy's CPU per request (its process CPU time over the
requests wrk completed). Then an open-loop pass (bench/open_loop.py, evenly spaced
arrivals, latency from when each request was due) at OPEN_RATE req/s on the same
pairs, with the nginx upstream alone as the machine's floor.

    BENCH_ROUNDS=3 BENCH_DURATION=10 bench/.venv-bench/bin/python bench/edge_bench.py

Writes bench/results/edge-<timestamp>.json and prints a Markdown section for RESULTS.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # the shared harness next to this file

OPEN_RATE = int(os.environ.get("BENCH_OPEN_RATE", "1000"))
PAIRS = {
    "rs256-single": ("gateway", "envoy-cache"),
    "rs256-distinct": ("gateway-nocache", "envoy-nocache"),
    "es256-distinct": ("gateway-nocache", "envoy-nocache"),
    "invalid-sig": ("gateway-nocache", "envoy-nocache"),
}
OPEN_PAIRS = {"rs256-single": ("gateway", "envoy-cache"), "rs256-distinct": ("gateway-nocache", "envoy-nocache")}


def start_nginx(procs: B.Procs, tmp: Path) -> B.Target:
    """The nginx upstream (bench.py's config), pinned with the load generator."""
    up_port, sink_port = B.free_port(), B.free_port()
    nginx = procs.start("nginx", B.taskset(B.LOAD_CPUS, ["/usr/sbin/nginx", "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                                        "-c", str(B.nginx_conf(tmp, up_port, sink_port))]),
                        open(tmp / "nginx.out", "wb"), subprocess.STDOUT)  # fmt: skip
    B.wait_http(f"http://127.0.0.1:{up_port}/", 20, nginx)
    return B.Target("upstream", "upstream", up_port, proc=nginx, cpus=B.LOAD_CPUS)


def start_gateway(procs: B.Procs, tmp: Path, name: str, up_port: int, jwks: Path, *, cache: bool = True,
                  server_keys: str = "") -> B.Target:
    """A 1-worker gateway on the proxy core: bench.py's config, the verdict cache on or off, extra server keys."""
    port, admin = B.free_port(), B.free_port()
    conf = B.gateway_conf(tmp, name, port, admin, up_port, jwks, None)
    text = conf.read_text().replace("  shutdown_grace: 1s", "  shutdown_grace: 1s" + server_keys)
    conf.write_text(text if cache else text.replace("max_entries: 10000", "max_entries: 0"))
    p = procs.start(name, B.taskset(B.PROXY_CPUS, [str(B.GATEWAY_BIN), "run", "-c", str(conf)]),
                    subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
    B.wait_http(f"http://127.0.0.1:{admin}/readyz", 30, p)
    return B.Target(name, "gateway", port, admin, p, B.PROXY_CPUS, conf)


def open_loop(target: B.Target, token_file: Path, duration: int) -> dict[str, Any]:
    argv = B.taskset(B.LOAD_CPUS, [str(B.GATEWAY_PY), str(B.HERE / "open_loop.py"), "--port", str(target.port),
                                   "--tokens", str(token_file), "--rate", str(OPEN_RATE), "--duration", str(duration)])  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 90)
    if r.returncode != 0:
        raise RuntimeError(f"open_loop failed: {r.stderr[-500:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="gateway-edge-bench-"))
    os.chmod(tmp, 0o755)  # noqa: S103 -- nginx workers read the config and files here
    procs = B.Procs()
    cells: list[dict[str, Any]] = []
    opens: list[dict[str, Any]] = []
    try:
        keys = B.make_keys_and_tokens(tmp)
        upstream = start_nginx(procs, tmp)
        up_port = upstream.port
        targets = {"upstream": upstream}
        for name, cache in (("envoy-nocache", False), ("envoy-cache", True)):
            port, admin = B.free_port(), B.free_port()
            conf = B.envoy_conf(tmp, name, port, admin, up_port, keys["jwks"], cache)
            p = procs.start(name, B.taskset(B.PROXY_CPUS, [str(B.ENVOY_BIN), "-c", str(conf), "--concurrency", "1",
                                                           "--disable-hot-restart", "--log-level", "warn"]),
                            subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
            B.wait_http(f"http://127.0.0.1:{admin}/ready", 30, p)
            targets[name] = B.Target(name, "envoy", port, admin, p, B.PROXY_CPUS, conf)
        for name, cache in (("gateway", True), ("gateway-nocache", False)):
            targets[name] = start_gateway(procs, tmp, name, up_port, keys["jwks"], cache=cache)
        scripts = {w: B.lua_script(tmp, w, B.WORKLOADS[w], keys["files"][B.WORKLOADS[w]["tokens"]], paced=False) for w in PAIRS}
        for t in targets.values():  # warm-up
            if t.kind != "upstream":
                B.run_wrk(t, scripts["rs256-single"], 1, B.CONNECTIONS)
        for rnd in range(1, B.ROUNDS + 1):
            for w, pair in PAIRS.items():
                spec = B.WORKLOADS[w]
                for name in pair if rnd % 2 else reversed(pair):
                    t = targets[name]
                    ok, msg = B.check_once(t, spec, keys["sets"][spec["tokens"]][0], spec["expect"])
                    cell: dict[str, Any] = {"round": rnd, "workload": w, "target": name, "check": msg, "ok": ok}
                    if ok:
                        cell.update(B.run_wrk(t, scripts[w], B.DURATION, B.CONNECTIONS))
                        cell["cpu_us_per_request"] = cell["proxy_cpu_seconds"] / max(1, cell["requests"]) * 1e6
                    cells.append(cell)
                    B.log(f"round {rnd} {w:15} {name:16} {cell.get('rps', 0):8.0f} req/s  p99 {cell.get('lat_p99_us', 0) / 1000:7.2f} ms"
                          f"  {cell.get('cpu_us_per_request', 0):6.1f} us CPU/req  cpu util {cell.get('proxy_cpu_util', 0):.2f}")  # fmt: skip
            for w, pair in OPEN_PAIRS.items():
                for name in (*pair, "upstream") if rnd % 2 else ("upstream", *reversed(pair)):
                    res = open_loop(targets[name], keys["files"][B.WORKLOADS[w]["tokens"]], B.DURATION)
                    res.update(round=rnd, workload=w, target=name)
                    opens.append(res)
                    B.log(f"round {rnd} open-loop {w:15} {name:16} {res['achieved_rate']:7.0f} req/s  p50 {res['p50_ms']} ms"
                          f"  p99 {res['p99_ms']} ms  p99.9 {res['p999_ms']} ms  statuses {res['statuses']}")
        report = {"started": stamp, "python": B.gateway_interpreter(), "rounds": B.ROUNDS, "duration_s": B.DURATION, "connections": B.CONNECTIONS,
                  "open_rate": OPEN_RATE, "loadavg_end": os.getloadavg(), "cells": cells, "open_loop": opens}  # fmt: skip
        out = B.HERE / "results" / f"edge-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(markdown(report, out.name))
        return 0
    finally:
        procs.stop_all()


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def markdown(report: dict[str, Any], json_name: str) -> str:
    cells = report["cells"]
    L = [f"Raw numbers: `bench/results/{json_name}` ({report['rounds']} rounds x {report['duration_s']} s, "
         f"wrk -t1 -c{report['connections']}; load average at the end {[round(x, 1) for x in report['loadavg_end']]}; "
         f"gateway on Python {report.get('python', '?')}).\n",
         "| workload | gateway | req/s | Envoy | req/s | ratio (same-round, median) | gateway CPU/req | Envoy CPU/req |",
         "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for w, (gw, ev) in PAIRS.items():
        def of(t: str, key: str, w: str = w) -> list[Any]:
            return [c.get(key) for c in cells if c["workload"] == w and c["target"] == t and c.get("ok")]

        ratios = []
        for c in cells:
            if c["workload"] == w and c["target"] == gw and c.get("ok"):
                other = [o for o in cells if o["workload"] == w and o["target"] == ev and o["round"] == c["round"] and o.get("ok")]
                if other:
                    ratios.append(c["rps"] / other[0]["rps"])
        r = _median(ratios)
        g_rps, e_rps = _median(of(gw, "rps")), _median(of(ev, "rps"))
        g_cpu, e_cpu = _median(of(gw, "cpu_us_per_request")), _median(of(ev, "cpu_us_per_request"))
        L.append(f"| {w} | {gw} | {g_rps or 0:.0f} | {ev} | {e_rps or 0:.0f} | {r or 0:.2f}x "
                 f"({', '.join(f'{x:.2f}' for x in ratios)}) | {g_cpu or 0:.0f} us | {e_cpu or 0:.0f} us |")  # fmt: skip
    L.append(f"\nOpen loop at {report['open_rate']} req/s (evenly spaced, latency from when each request was due; "
             "median over rounds, ms):\n")
    L.append("| workload | target | achieved req/s | p50 | p99 | p99.9 | max | non-2xx |")
    L.append("|---|---|---|---|---|---|---|---|")
    for w, pair in OPEN_PAIRS.items():
        for t in (*pair, "upstream"):
            rs = [o for o in report["open_loop"] if o["workload"] == w and o["target"] == t]
            bad = sum(v for o in rs for k, v in o["statuses"].items() if not k.startswith("2"))

            def med(key: str, rs: list[dict[str, Any]] = rs) -> str:
                m = _median([o[key] for o in rs])
                return "-" if m is None else f"{m:.2f}"

            L.append(f"| {w} | {t} | {med('achieved_rate')} | {med('p50_ms')} | {med('p99_ms')} | {med('p999_ms')} | "
                     f"{med('max_ms')} | {bad} |")  # fmt: skip
    return "\n".join(L)


if __name__ == "__main__":
    raise SystemExit(main())
