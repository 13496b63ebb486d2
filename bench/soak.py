"""The project's own soak: the gateway under fixed-rate mixed load for minutes, with rotation, IdP failures, reloads.

    python bench/soak.py --minutes 10 [--rate 200]        (make soak SOAK_MINUTES=10)

Processes, all on 127.0.0.1: the gateway (`gateway run`, a subprocess, one worker),
an upstream (a subprocess of this script: echo, body sink, WebSocket echo), and in
this process the JWKS server and the load generator.

- Load: open loop at a fixed rate (requests start on schedule whatever the answers
  do; at most MAX_INFLIGHT at once, beyond that a request is counted as shed).
  Latency runs from the scheduled start, so queueing is counted. The mix: valid
  tokens from a pool (cached), distinct new tokens (minted per request), bad
  signatures, expired tokens, no token, 256 KiB uploads and WebSocket round trips,
  each with its one expected status.
- Keys: every ROTATE_EVERY the IdP publishes a new RSA key; tokens switch to it
  SWITCH_AFTER later; the old key leaves the set REMOVE_AFTER the publication.
  The JWKS endpoint fails FAIL_RATE of fetches (500) and is down for OUTAGE
  seconds in every cycle, away from the switch.
- Config: rewritten every RELOAD_EVERY (a comment and the cache size change); the
  gateway notices and reloads.
- Every SAMPLE_EVERY: the gateway's RSS and open fds, statuses, p50/p99.

Verdict: 0 unexpected statuses (and none shed), RSS slope after warm-up under
1 MiB/min, open fds not growing (the fewest open in the last quarter of samples at
most 4 above the fewest in the first quarter, after warm-up), every reload applied,
no ERROR line. Writes
bench/soak/REPORT.md, bench/soak/samples.json and bench/soak/soak.png; exit 1 if
the verdict fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "soak"
GATEWAY_BIN = ROOT / ".venv" / "bin" / "gateway"

ISSUER = "https://idp.soak.test/"
AUDIENCE = "soak-api"
SAMPLE_EVERY = 5.0
RELOAD_EVERY = 60.0
ROTATE_FIRST, ROTATE_EVERY = 40.0, 150.0
SWITCH_AFTER, REMOVE_AFTER = 30.0, 60.0
OUTAGE_AFTER, OUTAGE = 75.0, 20.0  # after each publication: the IdP is down for OUTAGE seconds
FAIL_RATE = 0.05
MAX_INFLIGHT = 512
REQUEST_TIMEOUT = 10.0
POOL = 100
BODY = os.urandom(256 * 1024)
RSS_SLOPE_LIMIT = 1.0  # MiB per minute
FD_GROWTH_LIMIT = 4  # open fds: the last quarter's floor against the first's

# kind -> (share of requests, expected status)
MIX: dict[str, tuple[float, int]] = {
    "valid_cached": (0.70, 200),
    "distinct_new": (0.08, 200),
    "bad_signature": (0.06, 401),
    "expired": (0.05, 401),
    "no_token": (0.06, 401),
    "large_body": (0.03, 200),
    "websocket": (0.02, 101),
}


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- keys and tokens ------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def new(cls, index: int) -> SigningKey:
        return cls(f"soak-{index}", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        pub = self.key.public_key().public_numbers()
        n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64u(n), "e": b64u(b"\x01\x00\x01")}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "soak-user", "iat": now, "exp": now + 3600, **claims}
        head = b64u(json.dumps({"alg": "RS256", "kid": self.kid, "typ": "JWT"}).encode())
        signing_input = f"{head}.{b64u(json.dumps(body).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64u(sig)}"


@dataclass
class Tokens:
    """The token pools of one signing key."""

    key: SigningKey
    valid: list[str]
    bad_signature: list[str]
    expired: list[str]
    serial: int = 0

    @classmethod
    def mint(cls, key: SigningKey) -> Tokens:
        valid = [key.token(jti=f"pool-{i}") for i in range(POOL)]
        bad = []
        for i in range(POOL // 4):
            head, payload, sig = key.token(jti=f"bad-{i}").split(".")
            raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
            raw[len(raw) // 2] ^= 0x55
            bad.append(f"{head}.{payload}.{b64u(bytes(raw))}")
        expired = [key.token(jti=f"exp-{i}", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600) for i in range(POOL // 4)]
        return cls(key, valid, bad, expired)

    def distinct(self) -> str:
        self.serial += 1
        return self.key.token(jti=f"new-{self.serial}-{random.getrandbits(32)}")


# -- the identity provider -----------------------------------------------------------------------


class Idp:
    """The JWKS endpoint: ETag/304, a published key list that rotates, random failures and outages."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.published: list[SigningKey] = []
        self.down = False
        self.fetches: dict[str, int] = {"200": 0, "304": 0, "500": 0, "503": 0}

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if self.down:
            self.fetches["503"] += 1
            return web.Response(status=503, text="down")
        if self.rng.random() < FAIL_RATE:
            self.fetches["500"] += 1
            return web.Response(status=500, text="flaky")
        body = json.dumps({"keys": [k.jwk() for k in self.published]}).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            self.fetches["304"] += 1
            return web.Response(status=304, headers={"ETag": etag})
        self.fetches["200"] += 1
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


# -- the upstream (a subprocess) -------------------------------------------------------------------


async def _serve_upstream(port: int) -> None:
    async def echo(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
        return web.Response(text=f"ok {total}")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/api/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# -- the gateway's config ---------------------------------------------------------------------------

CONFIG = """# soak config, generation {generation}
server:
  listen: "127.0.0.1:{proxy}"
  admin_listen: "127.0.0.1:{admin}"
  shutdown_grace: 2s
upstream:
  url: "http://127.0.0.1:{upstream}"
  timeout: 10s
issuers:
  - name: idp
    issuer: "{issuer}"
    audiences: ["{audience}"]
    algorithms: [RS256]
    jwks:
      uri: "http://127.0.0.1:{jwks}/jwks.json"
      allow_http: true
      refresh_interval: 20s
      min_refresh_interval: 2s
      timeout: 2s
cache:
  max_entries: {cache}
  ttl: 5m
forward:
  claims_to_headers:
    sub: X-User-Id
routes:
  - name: api
    match: {{prefix: /api}}
    auth: required
"""


# -- load, samples, verdict ----------------------------------------------------------------------------


@dataclass
class Window:
    """What happened since the last sample."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Soak:
    minutes: float
    rate: float
    rng: random.Random = field(default_factory=lambda: random.Random(14))
    tokens: Tokens | None = None
    window: Window = field(default_factory=Window)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    unexpected_count: int = 0
    shed: int = 0
    sent: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    all_latencies: list[float] = field(default_factory=list)
    git_head: str = field(default_factory=lambda: _git_head())  # the code under test, taken at the start

    def record(self, kind: str, status: str, latency: float) -> None:
        expected = str(MIX[kind][1])
        self.totals.setdefault(kind, {})
        self.totals[kind][status] = self.totals[kind].get(status, 0) + 1
        self.window.statuses[status] = self.window.statuses.get(status, 0) + 1
        self.window.latencies.append(latency)
        self.all_latencies.append(latency)
        if status != expected:
            self.unexpected_count += 1
            if len(self.unexpected) < 30:
                self.unexpected.append(f"{kind}: expected {expected}, got {status}")


def _pick(rng: random.Random) -> str:
    x = rng.random()
    for kind, (share, _) in MIX.items():
        x -= share
        if x < 0:
            return kind
    return "valid_cached"


async def _one(soak: Soak, session: aiohttp.ClientSession, base: str, kind: str, scheduled: float) -> None:
    tokens = soak.tokens
    assert tokens is not None
    rng = soak.rng
    headers = {}
    if kind in ("valid_cached", "large_body", "websocket"):
        headers["Authorization"] = "Bearer " + rng.choice(tokens.valid)
    elif kind == "distinct_new":
        headers["Authorization"] = "Bearer " + tokens.distinct()
    elif kind == "bad_signature":
        headers["Authorization"] = "Bearer " + rng.choice(tokens.bad_signature)
    elif kind == "expired":
        headers["Authorization"] = "Bearer " + rng.choice(tokens.expired)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            if kind == "websocket":
                async with session.ws_connect(base + "/api/ws", headers=headers) as ws:
                    await ws.send_str("ping")
                    msg = await ws.receive()
                    status = "101" if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "ping" else "ws-no-echo"
            elif kind == "large_body":
                async with session.post(base + "/api/upload", data=BODY, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            else:
                async with session.get(base + f"/api/items/{rng.randrange(1000)}", headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
    except aiohttp.WSServerHandshakeError as exc:
        status = str(exc.status)
    except TimeoutError:
        status = "timeout"
    except aiohttp.ClientError as exc:
        status = type(exc).__name__
    soak.record(kind, status, time.perf_counter() - scheduled)


async def _generate(soak: Soak, base: str, stop_at: float) -> None:
    connector = aiohttp.TCPConnector(limit=MAX_INFLIGHT, limit_per_host=MAX_INFLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        start = time.perf_counter()
        interval = 1.0 / soak.rate
        i = 0
        while True:
            scheduled = start + i * interval
            if scheduled >= stop_at:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            i += 1
            kind = _pick(soak.rng)
            if len(tasks) >= MAX_INFLIGHT:
                soak.shed += 1
                continue
            soak.sent += 1
            task = asyncio.ensure_future(_one(soak, session, base, kind, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 2)


def _rss_and_fds(pid: int) -> tuple[float, int]:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sample(soak: Soak, pid: int, t0: float, stop_at: float) -> None:
    while time.perf_counter() < stop_at + SAMPLE_EVERY:
        await asyncio.sleep(SAMPLE_EVERY)
        window, soak.window = soak.window, Window()
        rss, fds = _rss_and_fds(pid)
        soak.samples.append({
            "t": round(time.perf_counter() - t0, 1),
            "rss_mib": round(rss, 2),
            "fds": fds,
            "requests": len(window.latencies),
            "rate": round(len(window.latencies) / SAMPLE_EVERY, 1),
            "p50_ms": round(_percentile(window.latencies, 0.50) * 1000, 2),
            "p99_ms": round(_percentile(window.latencies, 0.99) * 1000, 2),
            "statuses": window.statuses,
            "load1": round(os.getloadavg()[0], 2),
        })  # fmt: skip
        s = soak.samples[-1]
        log(f"t={s['t']:.0f}s rss={s['rss_mib']:.1f}MiB fds={s['fds']} rate={s['rate']}/s p50={s['p50_ms']}ms "
            f"p99={s['p99_ms']}ms unexpected={soak.unexpected_count} load={s['load1']}")  # fmt: skip


async def _scenario(soak: Soak, idp: Idp, write_config: Any, t0: float, stop_at: float) -> None:
    """Rotation, outages and reloads on schedule."""
    plan: list[tuple[float, str]] = []
    cycle = 0
    t = ROTATE_FIRST
    while t < stop_at - t0:
        plan += [(t, f"publish:{cycle + 1}"), (t + SWITCH_AFTER, f"switch:{cycle + 1}"), (t + REMOVE_AFTER, f"remove:{cycle}"),
                 (t + OUTAGE_AFTER, "outage"), (t + OUTAGE_AFTER + OUTAGE, "recovery")]  # fmt: skip
        cycle += 1
        t += ROTATE_EVERY
    plan += [(RELOAD_EVERY * k, "reload") for k in range(1, int((stop_at - t0) // RELOAD_EVERY) + 1)]
    plan.sort()
    pending: dict[int, Tokens] = {}
    generation = 0
    for at, what in plan:
        if t0 + at >= stop_at:
            break
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        action, _, arg = what.partition(":")
        if action == "publish":
            key = await asyncio.to_thread(SigningKey.new, int(arg))
            idp.published = [key, *idp.published]
            pending[int(arg)] = await asyncio.to_thread(Tokens.mint, key)
        elif action == "switch":
            soak.tokens = pending.pop(int(arg))
        elif action == "remove":
            idp.published = [k for k in idp.published if k.kid != f"soak-{arg}"]
        elif action == "outage":
            idp.down = True
        elif action == "recovery":
            idp.down = False
        elif action == "reload":
            generation += 1
            write_config(generation)
        soak.events.append((round(time.perf_counter() - t0, 1), what))
        log(f"event: {what}")


def _slope_per_minute(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def run(minutes: float, rate: float) -> int:
    soak = Soak(minutes, rate)
    idp = Idp(random.Random(7))
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    jwks_runner = web.ServerRunner(web.Server(idp.handle, access_log=None))
    await jwks_runner.setup()
    jwks_port = free_port()
    await web.TCPSite(jwks_runner, "127.0.0.1", jwks_port).start()
    ports = {"proxy": free_port(), "admin": free_port(), "upstream": free_port(), "jwks": jwks_port}
    config_path = tmp / "gateway.yaml"

    def write_config(generation: int) -> None:
        text = CONFIG.format(generation=generation, issuer=ISSUER, audience=AUDIENCE,
                             cache=10000 - generation % 2, **ports)  # fmt: skip
        tmp_path = config_path.with_suffix(".tmp")
        tmp_path.write_text(text)
        tmp_path.replace(config_path)  # atomic, as a ConfigMap swap is

    write_config(0)
    first_key = SigningKey.new(0)
    idp.published = [first_key]
    soak.tokens = await asyncio.to_thread(Tokens.mint, first_key)
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(ports["upstream"])])
    stderr_path = tmp / "gateway.stderr"
    with open(stderr_path, "wb") as err, open(os.devnull, "wb") as devnull:
        gateway = subprocess.Popen([str(GATEWAY_BIN), "run", "-c", str(config_path)], stdout=devnull, stderr=err)
    base = f"http://127.0.0.1:{ports['proxy']}"
    try:
        await _wait_ready(f"http://127.0.0.1:{ports['admin']}/readyz", base)
        t0 = time.perf_counter()
        stop_at = t0 + minutes * 60
        scenario = asyncio.ensure_future(_scenario(soak, idp, write_config, t0, stop_at))
        log(f"soak: {minutes:g} min at {rate:g} req/s; gateway pid {gateway.pid}")
        sampler = asyncio.ensure_future(_sample(soak, gateway.pid, t0, stop_at))
        await _generate(soak, base, stop_at)
        scenario.cancel()
        await asyncio.sleep(SAMPLE_EVERY)
        sampler.cancel()
        metrics = await _fetch_text(f"http://127.0.0.1:{ports['admin']}/metrics")
    finally:
        gateway.send_signal(signal.SIGTERM)
        upstream.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.wait(10)
        upstream.wait(10)
        await jwks_runner.cleanup()
    stderr = stderr_path.read_text(errors="replace")
    return _report(soak, idp, metrics, stderr)


async def _fetch_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


async def _wait_ready(readyz: str, base: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(readyz) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not become ready in 30 s")


def _metric_sum(metrics: str, name: str, label: str = "") -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _is_error_line(line: str) -> bool:
    """An error in the gateway's process log (one JSON object per line), or any traceback."""
    try:
        record = json.loads(line)
    except ValueError:
        return "Traceback" in line
    return isinstance(record, dict) and str(record.get("level", "")).lower() in ("error", "critical")


def _report(soak: Soak, idp: Idp, metrics: str, stderr: str) -> int:
    OUT.mkdir(exist_ok=True)
    warmup = max(60.0, soak.minutes * 60 * 0.2)
    after = [s for s in soak.samples if s["t"] >= warmup]
    rss_slope = _slope_per_minute([(s["t"], s["rss_mib"]) for s in after])
    fd_slope = _slope_per_minute([(s["t"], s["fds"]) for s in after])
    # Open fds follow the connections in flight (a latency hiccup on this shared machine
    # opens dozens), so a leak shows in the floor: the fewest open in the first and in
    # the last quarter after warm-up.
    quarter = max(1, len(after) // 4)
    fd_first = min((s["fds"] for s in after[:quarter]), default=0)
    fd_last = min((s["fds"] for s in after[-quarter:]), default=0)
    reloads_ok = _metric_sum(metrics, "gateway_config_reloads_total", 'result="ok"')
    reloads_err = _metric_sum(metrics, "gateway_config_reloads_total", 'result="error"')
    errors = [line for line in stderr.splitlines() if _is_error_line(line)]
    rewrites = sum(1 for _, what in soak.events if what == "reload")
    loads = [s["load1"] for s in soak.samples] or [0.0]
    checks = [
        ("unexpected statuses", f"{soak.unexpected_count}", "0", soak.unexpected_count == 0),
        ("requests shed by the generator (over MAX_INFLIGHT)", f"{soak.shed}", "0", soak.shed == 0),
        ("RSS slope after warm-up", f"{rss_slope:+.3f} MiB/min", f"< {RSS_SLOPE_LIMIT} MiB/min", rss_slope < RSS_SLOPE_LIMIT),
        ("open fds, floor (min) of the first -> last quarter after warm-up (slope)", f"{fd_first:g} -> {fd_last:g} ({fd_slope:+.2f} /min)",
         f"growth <= {FD_GROWTH_LIMIT}", fd_last - fd_first <= FD_GROWTH_LIMIT),
        ("config reloads applied", f"{reloads_ok:.0f} ok, {reloads_err:.0f} refused",
         f"{rewrites} ok (one per rewrite)", reloads_ok >= rewrites and not reloads_err),
        ("ERROR lines / tracebacks in the gateway's stderr", f"{len(errors)}", "0", not errors),
    ]  # fmt: skip
    passed = all(ok for *_, ok in checks)
    lat = soak.all_latencies
    (OUT / "samples.json").write_text(json.dumps({"samples": soak.samples, "events": soak.events, "totals": soak.totals}, indent=1) + "\n")
    _plot(soak, warmup, OUT / "soak.png")
    lines = [
        "# Soak report",
        "",
        f"Generated by `make soak SOAK_MINUTES={soak.minutes:g}` (`python bench/soak.py --minutes {soak.minutes:g} --rate {soak.rate:g}`) "
        f"at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, gateway at git {soak.git_head}, on {os.cpu_count()} cores "
        "shared with other work (the load average is in samples.json).",
        "",
        f"**Verdict: {'PASS' if passed else 'FAIL'}**",
        "",
        "| check | measured | goal | ok |",
        "|---|---|---|---|",
        *(f"| {name} | {value} | {goal} | {'yes' if ok else 'NO'} |" for name, value, goal, ok in checks),
        "",
        "## Load",
        "",
        f"- Open loop at {soak.rate:g} req/s for {soak.minutes:g} min: {soak.sent} requests sent, {soak.shed} shed; "
        f"latency from the scheduled start (queueing included): p50 {_percentile(lat, 0.5) * 1000:.2f} ms, "
        f"p99 {_percentile(lat, 0.99) * 1000:.2f} ms, p99.9 {_percentile(lat, 0.999) * 1000:.2f} ms, max {max(lat, default=0) * 1000:.1f} ms.",
        f"- The machine's 1-minute load average during the run (2 cores, shared): mean {statistics.fmean(loads):.1f}, "
        f"max {max(loads):.1f}; the generator, the upstream and the JWKS server run on the same cores as the gateway.",
        f"- Warm-up excluded from the slopes: the first {warmup:.0f} s. RSS {soak.samples[0]['rss_mib'] if soak.samples else 0} MiB at the "
        f"first sample, {soak.samples[-1]['rss_mib'] if soak.samples else 0} MiB at the last; open fds {soak.samples[0]['fds'] if soak.samples else 0} "
        f"-> {soak.samples[-1]['fds'] if soak.samples else 0}.",
        f"- IdP: key published every {ROTATE_EVERY:g} s from {ROTATE_FIRST:g} s, tokens switch {SWITCH_AFTER:g} s later, the old key leaves "
        f"{REMOVE_AFTER:g} s after publication; {FAIL_RATE:.0%} of fetches fail (500) and the endpoint is down (503) for {OUTAGE:g} s "
        f"{OUTAGE_AFTER:g} s after each publication. Fetches seen: {idp.fetches}.",
        f"- Config rewritten every {RELOAD_EVERY:g} s (the gateway polls it and reloads; each reload clears the token cache).",
        "",
        "| kind | share | expected | answers |",
        "|---|---|---|---|",
        *(f"| {kind} | {share:.0%} | {status} | {', '.join(f'{k}: {v}' for k, v in sorted(soak.totals.get(kind, {}).items()))} |"
          for kind, (share, status) in MIX.items()),
        "",
    ]
    if soak.unexpected:
        lines += ["Unexpected answers (first 30):", "", *(f"- {u}" for u in soak.unexpected), ""]
    if errors:
        lines += ["Gateway stderr errors (first 10):", "", *(f"    {e[:300]}" for e in errors[:10]), ""]
    lines += ["## Timeline", "", "![latency, RSS and fds over time](soak.png)", "",
              "Events (seconds from the start): " + ", ".join(f"{t:g} {what}" for t, what in soak.events), ""]  # fmt: skip
    (OUT / "REPORT.md").write_text("\n".join(lines))
    print("\n".join(lines[:16]))
    return 0 if passed else 1


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _plot(soak: Soak, warmup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in soak.samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax1.plot(t, [s["p50_ms"] for s in soak.samples], label="p50")
    ax1.plot(t, [s["p99_ms"] for s in soak.samples], label="p99")
    ax1.set_ylabel("latency ms (log)")
    ax1.set_yscale("log")
    ax1.set_title(f"soak: {soak.rate:g} req/s open loop for {soak.minutes:g} min; {soak.unexpected_count} unexpected statuses")
    ax2.plot(t, [s["rss_mib"] for s in soak.samples], color="tab:purple", label="RSS MiB")
    ax2.set_ylabel("gateway RSS MiB")
    ax3.plot(t, [s["fds"] for s in soak.samples], color="tab:brown", label="open fds")
    ax3b = ax3.twinx()
    ax3b.plot(t, [s["rate"] for s in soak.samples], color="tab:gray", linewidth=0.8, label="answers/s")
    ax3.set_ylabel("open fds")
    ax3b.set_ylabel("answers/s")
    ax3.set_xlabel("minutes")
    colors = {"reload": "tab:green", "switch": "tab:blue", "outage": "tab:red", "recovery": "tab:orange"}
    for at, what in soak.events:
        kind = what.split(":")[0]
        if kind in colors:
            for ax in (ax1, ax2, ax3):
                ax.axvline(at / 60, color=colors[kind], linewidth=0.6, alpha=0.6)
    for ax in (ax1, ax2, ax3):
        ax.axvspan(0, warmup / 60, color="gray", alpha=0.1)
    ax1.legend(loc="upper right", fontsize=8)
    ax2.text(0.01, 0.9, "lines: green reload, blue key switch, red outage, orange recovery; grey: warm-up",
             transform=ax2.transAxes, fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--upstream":
        asyncio.run(_serve_upstream(int(sys.argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "200")))
    ns = parser.parse_args()
    return asyncio.run(run(ns.minutes, ns.rate))


if __name__ == "__main__":
    sys.exit(main())
