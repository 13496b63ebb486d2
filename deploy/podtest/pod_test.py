"""The checks of deploy/pod-test.sh, run in the host namespace against a pod-like netns it made.

Starts, inside the namespace, the echo app on 127.0.0.1:8000 and the gateway on 0.0.0.0:8080
(admin 0.0.0.0:9901), both as uid 65532 like the pod's securityContext; the gateway's config
sits in a directory laid out like a Kubernetes ConfigMap volume (..data symlink). Then talks
to them from the host, through the namespace's address only. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt  # PyJWT, from the project's test extras
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[2]
ISSUER = "https://pod-test.invalid/"
AUDIENCE = "orders-api"
UID = 65532
TIMEOUT = 3.0

passed: list[str] = []


def ok(what: str) -> None:
    passed.append(what)
    print(f"  ok  {what}", flush=True)


def fail(what: str) -> None:
    raise SystemExit(f"pod-test FAILED: {what}")


def b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(numbers.x, 32), "y": b64(numbers.y, 32)}


def token(key: ec.EllipticCurvePrivateKey, kid: str, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "email": "u42@example.com",
               "iat": now, "exp": now + 300} | claims
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})


CONFIG = """
server:
  listen: "0.0.0.0:8080"
  admin_listen: "0.0.0.0:9901"
  shutdown_grace: 2s
upstream:
  url: "http://127.0.0.1:8000"
  connect_timeout: 1s
  timeout: 5s
issuers:
  - name: podtest
    issuer: "{issuer}"
    audiences: ["{audience}"]
    algorithms: [ES256]
    jwks: {{file: /POD/keys/jwks.json}}
forward:
  claims_to_headers:
    sub: X-User-Id
    email: X-User-Email
routes:
{routes}
"""
ROUTES_V1 = """  - name: api
    match: {prefix: /}
    auth: required
"""
ROUTES_V2 = """  - name: public
    match: {prefix: /public}
    auth: public
""" + ROUTES_V1


def write_configmap_version(cm_dir: Path, work: Path, version: int, routes: str) -> None:
    """Lay out a config version the way the kubelet updates a ConfigMap volume: a new
    timestamped directory, then an atomic rename of the ..data symlink onto it."""
    data = cm_dir / f"..2025_01_01_00_00_0{version}.000000000"
    data.mkdir()
    text = CONFIG.format(issuer=ISSUER, audience=AUDIENCE, routes=routes).replace("/POD", str(work))
    (data / "gateway.yaml").write_text(text)
    tmp_link = cm_dir / "..data_tmp"
    tmp_link.symlink_to(data.name)
    os.replace(tmp_link, cm_dir / "..data")
    if not (cm_dir / "gateway.yaml").is_symlink():
        (cm_dir / "gateway.yaml").symlink_to("..data/gateway.yaml")


def request(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_for(what: str, probe, deadline_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    fail(f"{what} not within {deadline_s}s (last error: {last!r})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--netns", required=True)
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--metrics-out", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("pod-test: terminated"))
    pod, work = args.pod_ip, args.work

    key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (work / "keys").mkdir()
    (work / "keys" / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    cm_dir = work / "etc-gateway"  # what the pod mounts at /etc/gateway
    cm_dir.mkdir()
    write_configmap_version(cm_dir, work, 1, ROUTES_V1)
    for p in [work, *work.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)

    as_pod_user: list[str] = []
    probe = subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", sys.executable, "-c", "import gateway"],
                           capture_output=True, timeout=30, cwd="/")
    if probe.returncode == 0:
        as_pod_user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
    else:
        print("  note: cannot run the venv as uid 65532 here; running the pod's processes as root", flush=True)
    in_pod = ["ip", "netns", "exec", args.netns, *as_pod_user]
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", "LANG": "C.UTF-8",
           "GATEWAY_CONFIG": str(cm_dir / "gateway.yaml")}
    gateway_bin = str(Path(sys.executable).parent / "gateway")
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: open(work / f"{name}.log", "wb") for name in ("app", "gateway")}
    try:
        app = subprocess.Popen([*in_pod, sys.executable, str(Path(__file__).parent / "echo_app.py"), "127.0.0.1", "8000"],
                               env=env, stdout=logs["app"], stderr=subprocess.STDOUT, cwd="/")
        procs.append(app)
        gw = subprocess.Popen([*in_pod, gateway_bin, "run"], env=env, stdout=logs["gateway"],
                              stderr=subprocess.STDOUT, cwd="/")
        procs.append(gw)

        # Like the kubelet's probes: over the pod IP, on the admin port.
        wait_for("gateway /healthz from the host", lambda: request(pod, 9901, "/healthz")[0] == 200)
        wait_for("gateway /readyz from the host", lambda: request(pod, 9901, "/readyz")[0] == 200)
        ok(f"gateway live and ready at {pod}:9901 (startup/readiness/liveness probe paths)")
        # The app answers inside the pod (so the refusal below is about where it listens).
        inside = subprocess.run([*in_pod, sys.executable, "-c",
                                 "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/x', timeout=3).status)"],
                                capture_output=True, text=True, timeout=20, env=env, cwd="/")
        if inside.stdout.strip() != "200":
            fail(f"echo app not answering inside the pod: {inside.stderr[-500:]}")
        ok("echo app answers on 127.0.0.1:8000 inside the pod")

        good = token(key, "k1")
        status, _, body = request(pod, 8080, "/orders/7", {"Authorization": f"Bearer {good}"})
        echoed = json.loads(body) if status == 200 else {}
        seen = {k.lower(): v for k, v in echoed.get("headers", {}).items()}
        if status != 200 or seen.get("x-user-id") != "user-42" or seen.get("x-user-email") != "u42@example.com":
            fail(f"valid token: {status} {body[:300]!r}")
        if echoed.get("path") != "/orders/7":
            fail(f"valid token: app saw path {echoed.get('path')!r}")
        ok("valid token -> 200 from the app, X-User-Id: user-42 and X-User-Email echoed")

        status, _, body = request(pod, 8080, "/orders/7", {"Authorization": f"Bearer {good}", "X-User-Id": "admin"})
        if status != 200 or json.loads(body)["headers"].get("X-User-Id") != "user-42":
            fail("a client-supplied X-User-Id reached the app")
        ok("client-supplied X-User-Id replaced by the verified claim")

        cases = {
            "no token": {},
            "token signed by another key": {"Authorization": f"Bearer {token(other_key, 'k1')}"},
            "expired token": {"Authorization": f"Bearer {token(key, 'k1', iat=int(time.time()) - 600, exp=int(time.time()) - 300)}"},
            "wrong audience": {"Authorization": f"Bearer {token(key, 'k1', aud='someone-else')}"},
            "garbage token": {"Authorization": "Bearer not.a.jwt"},
        }
        for name, headers in cases.items():
            status, hdrs, body = request(pod, 8080, "/orders/7", headers)
            if status != 401 or not hdrs.get("www-authenticate", "").startswith("Bearer"):
                fail(f"{name}: expected 401 with WWW-Authenticate, got {status} {body[:200]!r}")
            ok(f"{name} -> 401 ({hdrs['www-authenticate'][:60]})")

        # The app's port from outside the pod: nothing listens on the pod address there.
        try:
            with socket.create_connection((pod, 8000), timeout=TIMEOUT):
                fail(f"the app port {pod}:8000 accepted a connection from outside the pod")
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            ok(f"app port {pod}:8000 unreachable from outside ({type(exc).__name__})")

        if args.metrics_out:
            status, _, body = request(pod, 9901, "/metrics")
            if status != 200:
                fail(f"/metrics: {status}")
            args.metrics_out.write_bytes(body)
            ok(f"/metrics scraped from {pod}:9901 into {args.metrics_out} ({len(body)} bytes)")

        # ConfigMap update: the kubelet's ..data symlink swap; the gateway reloads by itself.
        if request(pod, 8080, "/public/x")[0] != 401:
            fail("before the reload /public should need a token")
        write_configmap_version(cm_dir, work, 2, ROUTES_V2)
        for p in (cm_dir.glob("..2025*/*")):
            p.chmod(0o644)
        wait_for("config reload after the ..data swap", lambda: request(pod, 8080, "/public/x")[0] == 200, 15)
        ok("ConfigMap-style ..data symlink swap reloaded the config (/public now public)")

        # SIGTERM: readiness 503 at once, then drain and exit 0.
        gw.send_signal(signal.SIGTERM)  # ip netns exec / setpriv exec the gateway: same pid
        try:
            code = gw.wait(timeout=15)
        except subprocess.TimeoutExpired:
            fail("gateway did not exit within 15s of SIGTERM (shutdown_grace 2s)")
        if code != 0:
            fail(f"gateway exited {code} after SIGTERM")
        ok("SIGTERM: gateway drained and exited 0")
    except BaseException:
        for name, log in logs.items():
            log.flush()
            tail = (work / f"{name}.log").read_bytes()[-2000:].decode(errors="replace")
            print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for log in logs.values():
            log.close()
    print(f"pod-test: {len(passed)} passed, 0 failed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
