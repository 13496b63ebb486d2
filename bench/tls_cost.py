"""The cost of TLS on the proxy port: new-connection (handshake) rate and keep-alive throughput, against plain HTTP, same run.

Starts `python -m gateway run` (uvloop) once per variant, on a public route (no token:
only the transport differs), in front of a tiny aiohttp upstream, and measures:

- new connections: client processes that each loop connect (+ full TLS handshake,
  no session resumption) -> GET -> read -> close, for --seconds;
- keep-alive: `wrk` (if installed; `make bench-tls` installs it) over --connections
  keep-alive connections for --seconds; without wrk, this part is skipped;

and, for both, the gateway process's CPU time per request from /proc (user+system),
which is what TLS costs the pod whatever else shares the machine. Everything runs on
127.0.0.1; every process started is stopped on exit.

    .venv/bin/python bench/tls_cost.py [--seconds 5] [--rounds 2] [--clients 2] [--connections 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")

UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    async def ok(request):
        return web.Response(text="ok")
    async def main():
        runner = web.ServerRunner(web.Server(ok, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)

# One client process: fresh connections until the deadline; prints "ok failed".
NEW_CONNECTIONS = textwrap.dedent(
    """
    import socket, ssl, sys, time
    port, seconds, tls, ca, cert, key = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", *sys.argv[4:7]
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=ca)
        if cert != "-":
            ctx.load_cert_chain(cert, key)
    request = b"GET /public/x HTTP/1.1\\r\\nHost: bench\\r\\nConnection: close\\r\\n\\r\\n"
    ok = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname="localhost")  # no session: a full handshake
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            ok, failed = (ok + 1, failed) if data.startswith(b"HTTP/1.1 200") else (ok, failed + 1)
        except OSError:
            failed += 1
    print(ok, failed)
    """
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> None:
    """A CA, a server certificate (EC P-256 and RSA-2048) for localhost, and a client certificate."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(cn: str, key: object, issuer: tuple[x509.Name, object] | None, *, ca: bool = False, san: bool = False) -> x509.Certificate:
        public = key.public_key()  # type: ignore[attr-defined]
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer[0] if issuer else _name(cn))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())  # type: ignore[arg-type]

    def write(stem: str, key: object, cert: x509.Certificate) -> None:
        (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())  # type: ignore[attr-defined]
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("bench-ca", ca_key, None, ca=True)
    write("ca", ca_key, ca)
    for stem, key in (("server-ec", ec.generate_private_key(ec.SECP256R1())), ("server-rsa", rsa.generate_private_key(65537, 2048))):
        write(stem, key, issue("localhost", key, (ca.subject, ca_key), san=True))
    client_key = ec.generate_private_key(ec.SECP256R1())
    write("client", client_key, issue("bench-client", client_key, (ca.subject, ca_key)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(proxy: int, admin: int, upstream: int, tls: str | None) -> str:
    text = textwrap.dedent(
        f"""
        server:
          listen: "127.0.0.1:{proxy}"
          admin_listen: "127.0.0.1:{admin}"
          shutdown_grace: 1s
        """
    )
    if tls is not None:
        stem = "server-rsa" if tls.endswith("rsa") else "server-ec"
        text += f"  tls:\n    cert_file: {stem}.crt\n    key_file: {stem}.key\n"
        if tls.startswith("mtls"):
            text += "    client_ca_file: ca.crt\n    client_auth: required\n"
    return text + textwrap.dedent(
        f"""
        upstream:
          url: "http://127.0.0.1:{upstream}"
        routes:
          - name: public
            match: {{prefix: /public}}
            auth: public
        """
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Gateway:
    def __init__(self, workdir: Path, variant: str, upstream_port: int) -> None:
        self.variant = variant
        self.port, admin = free_port(), free_port()
        tls = None if variant == "plain" else variant
        config = workdir / f"{variant}.yaml"
        config.write_text(config_text(self.port, admin, upstream_port, tls))
        self.log = open(workdir / f"{variant}.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway {variant} did not start: see {self.log.name}")
            time.sleep(0.05)
        if variant.endswith("-renewed"):
            # One renewal before measuring: every handshake then goes through the SNI callback's
            # switch to the newest context (SSL_set_SSL_CTX), the path a renewed server runs.
            os.utime(workdir / "server-ec.crt")
            while b'gateway_tls_reloads_total{result="ok"} 1.0' not in _get(f"http://127.0.0.1:{admin}/metrics"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"gateway {variant} did not renew its certificate")
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def new_connections(gw: Gateway, pki: Path, seconds: float, clients: int) -> dict[str, float]:
    tls = gw.variant != "plain"
    cert, key = (str(pki / "client.crt"), str(pki / "client.key")) if gw.variant.startswith("mtls") else ("-", "-")
    args = [str(gw.port), str(seconds), "1" if tls else "0", str(pki / "ca.crt"), cert, key]
    cpu0 = cpu_seconds(gw.proc.pid)
    started = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-c", NEW_CONNECTIONS, *args], stdout=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    outputs = [p.communicate(timeout=seconds + 30)[0].split() for p in procs]
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(gw.proc.pid) - cpu0
    ok = sum(int(o[0]) for o in outputs)
    failed = sum(int(o[1]) for o in outputs)
    return {"rps": ok / elapsed, "failed": failed, "cpu_us": 1e6 * cpu / max(ok, 1), "cpu_share": cpu / elapsed}


def s_time(gw: Gateway, seconds: float) -> float | None:
    """`openssl s_time -new`: one client, sequential full handshakes with a GET each; connections per second."""
    openssl = shutil.which("openssl")
    if openssl is None or gw.variant == "plain" or gw.variant.startswith("mtls"):
        return None
    out = subprocess.run(
        [openssl, "s_time", "-connect", f"127.0.0.1:{gw.port}", "-new", "-time", str(int(seconds)), "-www", "/public/x"],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    ).stdout
    found = re.search(r"(\d+) connections in (\d+) real seconds", out)
    return None if found is None else int(found.group(1)) / float(found.group(2))


def keepalive(gw: Gateway, seconds: float, connections: int) -> dict[str, float] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    scheme = "http" if gw.variant == "plain" else "https"
    if gw.variant.startswith("mtls"):
        return None  # wrk cannot present a client certificate
    cpu0 = cpu_seconds(gw.proc.pid)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{int(seconds)}s", f"{scheme}://localhost:{gw.port}/public/x"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    cpu = cpu_seconds(gw.proc.pid) - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "failed": 0 if errors is None else 1, "cpu_us": 1e6 * cpu / max(total, 1), "cpu_share": cpu / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2, help="new-connection client processes")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument("--variants", default="plain,tls-ec,tls-ec-renewed,tls-rsa,mtls-ec")
    args = parser.parse_args()
    variants = args.variants.split(",")
    results: dict[str, dict[str, list[dict[str, float]]]] = {v: {"new": [], "keepalive": [], "s_time": []} for v in variants}
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        work = Path(tmp)
        make_pki(work)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)])
        try:
            for _ in range(args.rounds):  # variants interleaved, so drift on a shared machine hits all alike
                for variant in variants:
                    gw = Gateway(work, variant, upstream_port)
                    try:
                        results[variant]["new"].append(new_connections(gw, work, args.seconds, args.clients))
                        ka = keepalive(gw, args.seconds, args.connections)
                        if ka is not None:
                            results[variant]["keepalive"].append(ka)
                        rate = s_time(gw, args.seconds)
                        if rate is not None:
                            results[variant]["s_time"].append({"rps": rate, "failed": 0})
                    finally:
                        gw.stop()
        finally:
            upstream.terminate()
            upstream.wait()
    print(f"openssl: {ssl.OPENSSL_VERSION}; {args.rounds} round(s) x {args.seconds:g}s; medians")
    print(f"{'variant':15} {'new conn/s':>11} {'CPU µs/conn':>12} {'keep-alive req/s':>17} {'CPU µs/req':>11} {'s_time conn/s':>14}")
    for variant in variants:
        new = results[variant]["new"]
        ka = results[variant]["keepalive"]

        def med(rows: list[dict[str, float]], key: str) -> str:
            return f"{statistics.median(r[key] for r in rows):.0f}" if rows else "-"

        failed = sum(r["failed"] for r in new + ka)
        st = results[variant]["s_time"]
        print(f"{variant:15} {med(new, 'rps'):>11} {med(new, 'cpu_us'):>12} {med(ka, 'rps'):>17} {med(ka, 'cpu_us'):>11} {med(st, 'rps'):>14}"
              + (f"  FAILED {failed:.0f}" if failed else ""))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
