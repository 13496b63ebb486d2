"""A fleet of sidecars against one identity provider: N real KeyStores, one JWKS server, rotation and outage.

    python bench/fleet.py --sidecars 100 1000 5000      (make fleet)

For each N: one JWKS server process on loopback, and N `gateway.keystore.KeyStore`
instances (the real code, each with its own HTTP session, as N sidecars would have)
spread over worker processes of at most 2,500 stores. All stores start at the same
instant (a fleet restarted at once) and then go through:

    0 s          start: every store loads its keys
    ROTATE_AT    the IdP publishes a new key and signs with it at once; each sidecar
                 sees its first new-key token at a uniform random time within
                 TOKEN_SPREAD, then one such token a second (each may trigger the
                 key store's unknown-kid refetch, as the request path does)
    OUTAGE_AT    the JWKS endpoint answers 503 for OUTAGE seconds
    END          the run stops

Time is compressed 20x against the defaults: refresh_interval 30 s (default 10 min),
min_refresh_interval 1.5 s (default 30 s), the key store's backoff constants (1 s
doubling, capped at 60 s: 0.05 s and 3 s here), TOKEN_SPREAD 10 s (200 s), and the
outage of 60 s stands for 20 minutes.

Measured at the IdP: requests per second (peak, mean, peak/mean), the share of 304s,
the largest burst (requests within any 100 ms), and on the sidecars: the time until
every one accepts new-key tokens, the time each serves its stale set during the
outage, and whether any ever lost its keys. Writes bench/fleet/fleet-<N>.json,
bench/fleet/fleet.png and the table into bench/RESULTS.md (between fleet markers).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "fleet"
sys.path.insert(0, str(ROOT))

REFRESH = 30.0
MIN_REFRESH = 1.5
TIMEOUT = 5.0
ROTATE_AT = 45.0
TOKEN_SPREAD = 10.0
OUTAGE_AT = 80.0
OUTAGE = 60.0
END = 200.0
PER_WORKER = 2500
COMPRESSION = 20
OLD_KID, NEW_KID = "key-1", "key-2"
BEGIN_MARK, END_MARK = "<!-- fleet:begin -->", "<!-- fleet:end -->"


def log(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the identity provider ----------------------------------------------------------------


def _rsa_jwk(kid: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(pub.n), "e": b64(pub.e)}


async def _serve_idp(start: float, port_file: Path, log_file: Path) -> None:
    """The JWKS endpoint: ETag + If-None-Match (304), the rotation and the outage on the shared clock."""
    from aiohttp import web

    old, new = _rsa_jwk(OLD_KID), _rsa_jwk(NEW_KID)
    documents = {}
    for phase, keys in (("before", [old]), ("after", [new, old])):
        body = json.dumps({"keys": keys}).encode()
        documents[phase] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    requests: list[tuple[float, int]] = []

    async def jwks(request: web.BaseRequest) -> web.Response:
        t = time.time() - start
        if OUTAGE_AT <= t < OUTAGE_AT + OUTAGE:
            requests.append((t, 503))
            return web.Response(status=503, text="unavailable")
        body, etag = documents["after" if t >= ROTATE_AT else "before"]
        if request.headers.get("If-None-Match") == etag:
            requests.append((t, 304))
            return web.Response(status=304, headers={"ETag": etag})
        requests.append((t, 200))
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    runner = web.ServerRunner(web.Server(jwks, access_log=None), backlog=8192)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=8192)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port_file.write_text(str(port))
    await asyncio.sleep(max(0.0, start + END + 1 - time.time()))
    log_file.write_text(json.dumps(requests))


# -- the sidecars ----------------------------------------------------------------------------


class _Sidecar:
    """One sidecar's KeyStore and what happened to it, on the shared clock."""

    def __init__(self, url: str, start: float, seed: int) -> None:
        from gateway.config.model import IssuerConfig, JwksConfig
        from gateway.keystore import KeyEvents, KeyStore

        self.start = start
        self.results: list[tuple[float, str]] = []
        self.new_key_at: float | None = None
        self.lost_keys = False
        sidecar = self

        class Events(KeyEvents):
            def refresh(self, issuer: str, result: str) -> None:
                sidecar.results.append((time.time() - start, result))

        cfg = IssuerConfig(
            name="idp", issuer="https://idp.fleet.test/", algorithms=("RS256",),
            jwks=JwksConfig(kind="uri", location=url, refresh_interval=REFRESH, min_refresh_interval=MIN_REFRESH,
                            timeout=TIMEOUT, allow_http=True),
        )  # fmt: skip
        self.store = KeyStore([cfg], events=Events(), random=random.Random(seed).random)
        self.keys = self.store.get("idp")
        self.keys.add_listener(self._on_change)
        self.first_token_at = ROTATE_AT + random.Random(seed ^ 0x5EED).uniform(0, TOKEN_SPREAD)

    def _on_change(self, old: Any, new: Any) -> None:
        if self.new_key_at is None and NEW_KID in new.kids:
            self.new_key_at = time.time() - self.start

    async def traffic(self) -> None:
        """From its first new-key token on, one such token a second: the request path's unknown-kid refetch."""
        await asyncio.sleep(max(0.0, self.start + self.first_token_at - time.time()))
        while self.new_key_at is None and time.time() - self.start < END:
            keys = self.keys.keys
            if keys is None or NEW_KID not in keys.kids:
                await self.keys.refetch_unknown_kid()
            await asyncio.sleep(1.0)

    async def watch(self) -> None:
        """After the first load, the set must never be gone again (stale, yes; empty, never)."""
        while time.time() - self.start < END:
            await asyncio.sleep(0.5)
            if self.results and self.keys.keys is None:
                self.lost_keys = True

    def summary(self) -> dict[str, Any]:
        return {"results": self.results, "new_key_at": self.new_key_at, "lost_keys": self.lost_keys}


async def _run_worker(url: str, start: float, count: int, first: int, out: Path) -> None:
    _raise_fd_limit()
    # Thousands of stores each logging every failed refresh would measure the terminal.
    logging.getLogger("gateway.keys").setLevel(logging.CRITICAL)
    # The backoff constants are compressed with everything else, so the fleet retries
    # in an outage as often, relative to its refresh interval, as it would in real time.
    from gateway import keystore

    keystore.BACKOFF_INITIAL /= COMPRESSION
    keystore.BACKOFF_CAP /= COMPRESSION
    sidecars = [_Sidecar(url, start, first + i) for i in range(count)]
    await asyncio.sleep(max(0.0, start - time.time()))
    for sidecar in sidecars:
        await sidecar.store.start()
    tasks = [asyncio.ensure_future(s.traffic()) for s in sidecars] + [asyncio.ensure_future(s.watch()) for s in sidecars]
    await asyncio.sleep(max(0.0, start + END - time.time()))
    for task in tasks:
        task.cancel()
    out.write_text(json.dumps([s.summary() for s in sidecars]))
    os._exit(0)  # closing thousands of sessions one by one measures nothing


# -- one run and its numbers ------------------------------------------------------------------


def _stale_seconds(results: list[tuple[float, str]]) -> float | None:
    """From the first failed refresh at or after the outage to the next good one."""
    failed_at = None
    for t, result in results:
        if t < OUTAGE_AT:
            continue
        if result not in ("ok", "not_modified"):
            failed_at = failed_at if failed_at is not None else t
        elif failed_at is not None:
            return t - failed_at
    return None if failed_at is None else END - failed_at


def run_fleet(n: int, tmp: Path) -> dict[str, Any]:
    workers = max(1, math.ceil(n / PER_WORKER))
    port_file, idp_log = tmp / f"idp-{n}.port", tmp / f"idp-{n}.json"
    setup = 3.0 + n / 1000  # time to build the stores before the common start
    start = time.time() + setup + 2
    me = [sys.executable, str(Path(__file__).resolve())]
    procs = [subprocess.Popen([*me, "--idp", str(start), str(port_file), str(idp_log)])]
    while not port_file.exists():
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port_file.read_text()}/jwks.json"
    outs = []
    for w in range(workers):
        count = n // workers + (1 if w < n % workers else 0)
        outs.append(tmp / f"sidecars-{n}-{w}.json")
        procs.append(subprocess.Popen([*me, "--worker", url, str(start), str(count), str(w * PER_WORKER), str(outs[-1])]))
    log(f"N={n}: {workers} worker process(es); run of {END:.0f}s starts in {start - time.time():.1f}s")
    for proc in procs:
        proc.wait()
    requests = json.loads(idp_log.read_text())
    sidecars = [s for out in outs for s in json.loads(out.read_text())]
    return _measure(n, workers, requests, sidecars)


def _measure(n: int, workers: int, requests: list[list[float]], sidecars: list[dict[str, Any]]) -> dict[str, Any]:
    per_second = [0] * int(END + 1)
    per_tenth: dict[int, int] = {}
    for t, _status in requests:
        if 0 <= t < END + 1:
            per_second[int(t)] += 1
        per_tenth[int(t * 10)] = per_tenth.get(int(t * 10), 0) + 1
    statuses = {code: sum(1 for _, s in requests if s == code) for code in (200, 304, 503)}
    answered = statuses[200] + statuses[304]
    mean = len(requests) / END
    # The start burst lasts until every store has loaded its keys once (its first answer).
    loaded = max((s["results"][0][0] for s in sidecars if s["results"]), default=0.0)
    after_start = int(loaded) + 1
    steady = per_second[after_start:]
    accepted = [s["new_key_at"] for s in sidecars]
    stale = [x for x in (_stale_seconds([tuple(r) for r in s["results"]]) for s in sidecars) if x is not None]
    return {
        "sidecars": n,
        "workers": workers,
        "idp_requests": len(requests),
        "idp_statuses": statuses,
        "idp_mean_rps": round(mean, 1),
        "idp_peak_rps": max(per_second),
        "idp_peak_rps_after_start": max(steady),
        "peak_over_mean": round(max(per_second) / mean, 1),
        "peak_over_mean_after_start": round(max(steady) / mean, 1),
        "share_304": round(statuses[304] / answered, 3) if answered else 0.0,
        "largest_burst_100ms": max(per_tenth.values()),
        "largest_burst_100ms_after_start": max((v for k, v in per_tenth.items() if k >= after_start * 10), default=0),
        "start_burst_s": after_start,
        "steady_rps": round(n / REFRESH, 1),
        "peak_over_steady_after_start": round(max(steady) / (n / REFRESH), 1),
        "all_accept_new_key_s": None if None in accepted else round(max(accepted) - ROTATE_AT, 2),
        "median_accept_new_key_s": round(sorted(a for a in accepted if a is not None)[len(accepted) // 2] - ROTATE_AT, 2)
        if all(a is not None for a in accepted) else None,
        "stale_max_s": round(max(stale), 1) if stale else 0.0,
        "stale_mean_s": round(sum(stale) / len(stale), 1) if stale else 0.0,
        "sidecars_stale": len(stale),
        "sidecars_lost_keys": sum(1 for s in sidecars if s["lost_keys"]),
        "per_second": per_second,
        "per_second_by_status": {
            str(code): [sum(1 for t, s in requests if s == code and int(t) == sec) for sec in range(len(per_second))]
            for code in (200, 304, 503)
        },
    }


# -- report --------------------------------------------------------------------------------------


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3.2 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        seconds = list(range(len(r["per_second"])))
        bottom = [0] * len(seconds)
        for code, color in (("200", "tab:blue"), ("304", "tab:green"), ("503", "tab:red")):
            values = r["per_second_by_status"][code]
            ax.bar(seconds, values, bottom=bottom, width=1.0, color=color, label=code, linewidth=0)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.axhline(r["idp_mean_rps"], color="black", linestyle="--", linewidth=0.8, label=f"mean {r['idp_mean_rps']}/s")
        for x, what in ((ROTATE_AT, "rotation"), (OUTAGE_AT, "outage"), (OUTAGE_AT + OUTAGE, "recovery")):
            ax.axvline(x, color="gray", linewidth=0.8)
            ax.text(x + 0.5, ax.get_ylim()[1] * 0.9, what, fontsize=8, color="gray")
        ax.set_ylabel("IdP req/s")
        ax.set_yscale("symlog", linthresh=10)
        ax.set_title(f"{r['sidecars']} sidecars: peak {r['idp_peak_rps']}/s (after start {r['idp_peak_rps_after_start']}/s), "
                     f"mean {r['idp_mean_rps']}/s", fontsize=10)  # fmt: skip
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel(f"seconds (compressed {COMPRESSION}x: refresh_interval {REFRESH:g}s, min_refresh_interval {MIN_REFRESH:g}s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _table(results: list[dict[str, Any]], command: str) -> str:
    head = (
        "| sidecars | IdP requests | IdP mean req/s | IdP peak req/s (after start) | peak/mean (after start) | "
        "after-start peak / steady N/R | 304 share | largest burst in 100 ms (after start) | all accept new key | "
        "stale serving max (mean) | lost keys |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {r['sidecars']} | {r['idp_requests']} | {r['idp_mean_rps']} | {r['idp_peak_rps']} ({r['idp_peak_rps_after_start']}) | "
        f"{r['peak_over_mean']}x ({r['peak_over_mean_after_start']}x) | {r['peak_over_steady_after_start']}x of {r['steady_rps']} | "
        f"{r['share_304'] * 100:.1f}% | "
        f"{r['largest_burst_100ms']} ({r['largest_burst_100ms_after_start']}) | {r['all_accept_new_key_s']} s | "
        f"{r['stale_max_s']} s ({r['stale_mean_s']} s) | {r['sidecars_lost_keys']} |\n"
        for r in results
    )
    return (
        f"{BEGIN_MARK}\n## Fleet: N sidecars' key stores against one IdP\n\n"
        f"Generated by `{command}` at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} on {os.cpu_count()} cores "
        "(shared with other work). The real `KeyStore`, one per sidecar with its own HTTP session, "
        f"up to {PER_WORKER} per process; one JWKS server process (ETag / 304) on loopback. Time compressed {COMPRESSION}x: "
        f"refresh_interval {REFRESH:g}s (default 600s), min_refresh_interval {MIN_REFRESH:g}s (default 30s); "
        f"all stores start at 0 s; at {ROTATE_AT:g}s the IdP publishes a new key and signs with it at once, each sidecar's "
        f"first new-key token arriving within {TOKEN_SPREAD:g}s (then one a second: the unknown-kid refetch); "
        f"{OUTAGE:g}s of 503 from {OUTAGE_AT:g}s; run ends at {END:g}s. The backoff constants are compressed too (1 s -> 0.05 s, 60 s -> 3 s). "
        "\"Start\" is the burst until every store has loaded its keys once (all N at one instant: a fleet restarted together); "
        "\"after start\" is the rest of the run. Steady N/R is what N sidecars ask with nothing going on (N / refresh_interval). "
        "All accept new key: seconds from the switch until the last sidecar holds the new key. Stale serving: "
        "from a sidecar's first failed refresh in the outage to its next good one (its old set kept serving). "
        "Raw numbers: `bench/fleet/fleet-<N>.json`.\n\n"
        f"{head}{rows}\n![IdP requests per second](fleet/fleet.png)\n{END_MARK}\n"
    )


def write_results(results: list[dict[str, Any]], command: str) -> None:
    OUT.mkdir(exist_ok=True)
    for r in results:
        (OUT / f"fleet-{r['sidecars']}.json").write_text(json.dumps(r, indent=1) + "\n")
    _plot(results, OUT / "fleet.png")
    section = _table(results, command)
    md = HERE / "RESULTS.md"
    text = md.read_text() if md.exists() else ""
    if BEGIN_MARK in text and END_MARK in text:
        text = text[: text.index(BEGIN_MARK)] + section + text[text.index(END_MARK) + len(END_MARK) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md.write_text(text)
    print(section)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--idp":
        asyncio.run(_serve_idp(float(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, start, count, first, out = sys.argv[2:7]
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_run_worker(url, float(start), int(count), int(first), Path(out)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sidecars", type=int, nargs="+", default=[100, 1000, 5000])
    ns = parser.parse_args()
    _raise_fd_limit()
    results = []
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        for n in ns.sidecars:
            result = run_fleet(n, Path(tmp))
            log(", ".join(f"{k}={v}" for k, v in result.items() if not k.startswith("per_second")))
            results.append(result)
    write_results(results, "python bench/fleet.py --sidecars " + " ".join(map(str, ns.sidecars)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
