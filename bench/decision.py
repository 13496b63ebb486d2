"""Check throughput and p99 on the authz port next to the proxy port, in one run (`make bench-decision`).

One gateway process (1 worker, pinned to core 1) serves both ports; wrk (1 thread) and the
nginx upstream share core 0. Interleaved rounds: proxy, authz, proxy, authz... each loaded
alone for DURATION seconds on loopback. Workloads:

- proxy: GET /api/orders with one RS256 token, forwarded to nginx (`return 200`);
- authz: Traefik's check for the same request (X-Forwarded-Method/-Uri/-Host + the token),
  answered 200 with the claim headers, nothing forwarded.

Knobs: DECISION_ROUNDS (3), DECISION_DURATION (10 s), DECISION_CONNECTIONS (32).
Results: printed as a Markdown table and written to bench/results/decision-<ts>.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from request_cost import b64, free_port  # bench/ is the script's directory

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ROUNDS = int(os.environ.get("DECISION_ROUNDS", "3"))
DURATION = int(os.environ.get("DECISION_DURATION", "10"))
CONNECTIONS = int(os.environ.get("DECISION_CONNECTIONS", "32"))
ISSUER = "https://idp.example.com/"


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, headers: dict[str, str], pid: int) -> tuple[float, float, float]:
    """(requests/s, p99 ms, gateway CPU µs per request) of one wrk run; fails on any non-2xx answer.

    CPU per request is the least sensitive to other load on the machine."""
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99, cpu / requests * 1e6


def main() -> int:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: `make bench-decision` installs it")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="bench-decision-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(pub.n), "e": b64(pub.e)}
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "orders-api", "sub": "alice", "email": "alice@example.com",
              "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    app, proxy, authz, admin = free_port(), free_port(), free_port(), free_port()
    (tmp / "logs").mkdir()
    (tmp / "nginx.conf").write_text(
        "worker_processes 1; events {} http { access_log off; server { listen 127.0.0.1:" + str(app) + "; "
        "location / { return 200 'ok'; } } }"
    )
    (tmp / "gateway.yaml").write_text(f"""\
server:
  listen: "127.0.0.1:{proxy}"
  authz_listen: "127.0.0.1:{authz}"
  authz_dialect: traefik
  admin_listen: "127.0.0.1:{admin}"
upstream:
  url: "http://127.0.0.1:{app}"
issuers:
  - name: corp
    issuer: "{ISSUER}"
    audiences: [orders-api]
    algorithms: [RS256]
    jwks: {{file: jwks.json}}
forward:
  claims_to_headers: {{sub: X-User-Id, email: X-User-Email}}
routes:
  - name: api
    match: {{prefix: /api}}
    auth: required
""")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            ["taskset", "-c", "0", nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
             "-g", f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;"]))
        with open(tmp / "gateway.out", "wb") as out:
            procs.append(subprocess.Popen(
                ["taskset", "-c", "1", str(ROOT / ".venv" / "bin" / "gateway"), "run", "-c", str(tmp / "gateway.yaml")],
                stdout=out, stderr=subprocess.STDOUT))
        for port in (app, proxy, authz):
            wait_listening(port)
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).read()
        bearer = {"Authorization": f"Bearer {token}"}
        targets = {
            "proxy": (f"http://127.0.0.1:{proxy}/api/orders", bearer),
            "authz": (f"http://127.0.0.1:{authz}/check",
                      {**bearer, "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/orders",
                       "X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https"}),
        }
        for name, (url, headers) in targets.items():  # correctness before load
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                assert resp.status == 200, name
                if name == "authz":
                    assert resp.headers["X-User-Id"] == "alice" and resp.read() == b""
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
        for round_no in range(ROUNDS):
            for name, (url, headers) in targets.items():
                rps, p99, cpu_us = wrk(url, headers, procs[1].pid)
                results[name].append((rps, p99, cpu_us))
                print(f"round {round_no + 1} {name}: {rps:.0f} req/s, p99 {p99:.2f} ms, {cpu_us:.0f} us CPU/req",
                      file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    summary = {
        name: {"rps_median": statistics.median(r for r, _, _ in runs),
               "p99_ms_median": statistics.median(p for _, p, _ in runs),
               "cpu_us_per_request_median": statistics.median(c for _, _, c in runs), "runs": runs}
        for name, runs in results.items()
    }
    command = (f"make bench-decision  (DECISION_ROUNDS={ROUNDS} DECISION_DURATION={DURATION} "
               f"DECISION_CONNECTIONS={CONNECTIONS}; wrk -t1 -c{CONNECTIONS} -d{DURATION}s --latency)")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"decision-{stamp}.json").write_text(
        json.dumps({"command": command, "cpus": os.cpu_count(), "results": summary}, indent=2) + "\n"
    )
    table = [f"| port | req/s (median of {ROUNDS}) | p99 ms (median) | gateway CPU µs/request (median) |"
             " every run (req/s / p99 ms / CPU µs) |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        runs = ", ".join(f"{r:.0f} / {p:.1f} / {c:.0f}" for r, p, c in s["runs"])
        table.append(f"| {name} | {s['rps_median']:.0f} | {s['p99_ms_median']:.2f} | "
                     f"{s['cpu_us_per_request_median']:.0f} | {runs} |")
    report = (
        f"# Decision mode: the authz port next to the proxy port\n\nRun {stamp} on {os.cpu_count()} CPUs: `{command}`.\n"
        "One gateway process (1 worker, core 1) serves both ports; wrk and the nginx upstream share core 0.\n"
        "proxy: GET /api/orders with one RS256 token, forwarded to nginx `return 200`; authz: Traefik's check\n"
        "for the same request, answered 200 with the claim headers.\n\n" + "\n".join(table) + "\n"
    )
    (HERE / "RESULTS-decision.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
