"""In-process cost of one proxied request with a cached token (or, with --invalid, of one 401): gateway CPU per request.

The gateway runs in this process (uvloop); the upstream and the load generator run in
child processes, so the CPU time measured here is the gateway's alone.

    .venv/bin/python bench/request_cost.py [--requests 20000] [--profile]
    .venv/bin/python bench/request_cost.py --dpop [--rounds 3]   # Bearer vs DPoP, interleaved on one gateway
    .venv/bin/python bench/request_cost.py --no-cache --alg ES256  # the token signed with P-256 instead of RSA

With --dpop the issuer has `dpop: {mode: optional}` and two loads alternate on the same
gateway: a plain Bearer token, and a token bound to an ES256 client key (cnf.jkt) sent
with a fresh proof per request (minted before the timed window, so the client's signing
is not in the measurement; the gateway verifies every proof: signature, htu, ath, replay).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config.load import load_config
from gateway.dpop_proof import DpopKey
from gateway.server import GatewayProcess

UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    async def ok(request):
        return web.Response(text="ok")
    async def main():
        server = web.Server(ok, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]))
        await site.start()
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)

LOAD = textwrap.dedent(
    """
    import asyncio, sys, time, aiohttp
    import json
    url, token, total, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    expect = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    # argv[6]: a file of JSON header objects, one per request (DPoP: a fresh proof each)
    per_request = iter([json.loads(line) for line in open(sys.argv[6])]) if len(sys.argv) > 6 else None
    async def main():
        headers = {"Authorization": "Bearer " + token}
        done = 0
        bad = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as http:
            async def worker(n):
                nonlocal done, bad
                for _ in range(n):
                    h = next(per_request) if per_request else headers  # each proof used once
                    async with http.get(url, headers=h) as resp:
                        await resp.read()
                        bad += resp.status != expect
                    done += 1
            t = time.perf_counter()
            await asyncio.gather(*(worker(total // conc) for _ in range(conc)))
            print(done, bad, time.perf_counter() - t)
    asyncio.run(main())
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(n: int, size: int = 0) -> str:
    import base64

    return base64.urlsafe_b64encode(n.to_bytes(size or (n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


async def _timed_load(url: str, token: str, requests: int, expect: str, headers_file: Path | None) -> dict[str, float]:
    """One load run; the gateway's CPU (this process) over the run, per request."""
    extra = [str(headers_file)] if headers_file is not None else []
    cpu0 = time.process_time()
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOAD, url, token, str(requests), "32", expect, *extra, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await load.communicate()
    cpu = time.process_time() - cpu0
    done, bad, wall = out.split()
    return {
        "requests": int(done), "non_expected": int(bad), "gateway_cpu_us_per_request": round(cpu / int(done) * 1e6, 1),
        "requests_per_second": round(int(done) / float(wall)), "client_wall_seconds": round(float(wall), 3),
    }


def _proof_file(tmp: Path, client: DpopKey, url: str, token: str, requests: int) -> Path:
    path = tmp / "dpop-headers.jsonl"
    with open(path, "w") as out:
        for _ in range(requests):
            out.write(json.dumps({"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", url, token)}) + "\n")
    return path


async def measure(
    requests: int, profile: bool, invalid: bool, no_cache: bool, dpop: bool = False, rounds: int = 3,
    alg: str = "RS256",
) -> dict[str, Any]:
    key: Any
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        point = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "kid": "k", "x": b64(point.x, 32), "y": b64(point.y, 32)}
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "kid": "k", "n": b64(pub.n), "e": b64(pub.e)}
    tmp = Path(tempfile.mkdtemp())
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    up_port, port, admin_port = free_port(), free_port(), free_port()
    (tmp / "gw.yaml").write_text(
        textwrap.dedent(
            f"""
            server: {{listen: "127.0.0.1:{port}", admin_listen: "127.0.0.1:{admin_port}"}}
            upstream: {{url: "http://127.0.0.1:{up_port}"}}
            issuers:
              - name: bench
                issuer: "https://issuer.bench/"
                audiences: [bench]
                algorithms: [{alg}]
                jwks: {{file: jwks.json}}
                dpop: {{mode: {"optional" if dpop else "off"}, algorithms: [ES256]}}
            forward:
              claims_to_headers: {{sub: X-User-Id}}
              payload_header: X-Jwt-Payload
            routes:
              - name: api
                match: {{prefix: /}}
                auth: required
            cache: {{max_entries: {0 if no_cache else 10000}}}
            """
        )
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": "https://issuer.bench/", "aud": "bench", "sub": "u1", "iat": now, "exp": now + 3600},
        key, algorithm=alg, headers={"kid": "k"},
    )
    expect = "200"
    if invalid:  # the 401 path: a corrupted signature, verified (and refused) on every request
        head, payload, sig = token.split(".")
        token = f"{head}.{payload}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"
        expect = "401"
    client = DpopKey()
    bound = jwt.encode(
        {"iss": "https://issuer.bench/", "aud": "bench", "sub": "u1", "iat": now, "exp": now + 3600,
         "cnf": {"jkt": client.jkt}},
        key, algorithm=alg, headers={"kid": "k"},
    )
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)])
    process = GatewayProcess(load_config(tmp / "gw.yaml"))
    process.access_log._stream = open(os.devnull, "w")  # the JSON line is still built, only not shown
    await process.start()
    try:
        await asyncio.sleep(0.5)
        url = f"http://127.0.0.1:{port}/api/x"
        warm = await asyncio.create_subprocess_exec(sys.executable, "-c", LOAD, url, token, "2000", "32", expect)
        await warm.wait()
        if dpop:
            # Interleaved rounds, same gateway: Bearer, then DPoP, `rounds` times.
            runs: dict[str, list[dict[str, float]]] = {"bearer": [], "dpop": []}
            for _ in range(rounds):
                runs["bearer"].append(await _timed_load(url, token, requests, "200", None))
                proofs = _proof_file(tmp, client, url, bound, requests)
                runs["dpop"].append(await _timed_load(url, bound, requests, "200", proofs))
            summary: dict[str, Any] = {"rounds": runs}
            for mode, results in runs.items():
                summary[f"{mode}_median_cpu_us_per_request"] = statistics.median(
                    r["gateway_cpu_us_per_request"] for r in results)
                summary[f"{mode}_median_requests_per_second"] = statistics.median(
                    r["requests_per_second"] for r in results)
            return summary
        profiler = cProfile.Profile() if profile else None
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOAD, url, token, str(requests), "32", expect, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await load.communicate()
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        done, bad, wall = out.split()
        result = {
            "requests": int(done), "non_200": int(bad), "gateway_cpu_us_per_request": cpu / int(done) * 1e6,
            "client_wall_seconds": float(wall),
        }
        if profiler:
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
            print(stream.getvalue())
        return result
    finally:
        await process.stop()
        upstream.terminate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dpop", action="store_true", help="Bearer vs DPoP-bound token with a proof per request")
    parser.add_argument("--rounds", type=int, default=3, help="with --dpop: interleaved rounds per mode")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--invalid", action="store_true", help="the 401 path: a token with a corrupted signature")
    parser.add_argument("--no-cache", action="store_true", help="verdict cache off: every request verifies")
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256", help="the token's algorithm")
    args = parser.parse_args()
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(measure(args.requests, args.profile, args.invalid, args.no_cache, args.dpop, args.rounds, args.alg))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
