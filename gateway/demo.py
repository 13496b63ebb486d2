"""`gateway demo`: a demo issuer (fresh key, JWKS on loopback), an echo upstream and the gateway, with curl lines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config.load import load_config
from gateway.dpop_proof import DpopKey, es256_compact, es256_public_jwk
from gateway.dpop_proof import b64url as _b64url
from gateway.process_log import configure_logging
from gateway.server import GatewayProcess, bound_port

DEMO_AUDIENCE = "demo-api"
DEMO_KID = "demo-key-1"
DPOP_KEY_FILE = "dpop-client-key.pem"
DEMO_ENC_KID = "demo-gateway-enc-1"

DEMO_CONFIG = """\
server:
  listen: "127.0.0.1:{port}"
  admin_listen: "127.0.0.1:{admin_port}"
  shutdown_grace: 2s
{authz}upstream:
  url: "http://127.0.0.1:{upstream_port}"
issuers:
  - name: demo
    issuer: "{issuer}"
    audiences: ["{audience}"]
    algorithms: [ES256]
    jwks:
      uri: "{issuer}jwks.json"
      allow_http: true          # loopback demo only: real issuers use https
    dpop:
      mode: optional            # tokens bound to a key (cnf.jkt) need a DPoP proof
forward:
  claims_to_headers:
    sub: X-User-Id
    email: X-User-Email
    scope: X-User-Scope
routes:
  - name: public
    match: {{prefix: /public}}
    auth: public
  - name: admin
    match: {{prefix: /admin}}
    auth: required
    claims:
      scope: {{contains: admin}}
  - name: api
    match: {{prefix: /}}
    auth: required
decryption:                     # the gateway's own private key: the demo issuer encrypts tokens to it
  keys: {{file: "{decryption_keys}"}}
  algorithms: [RSA-OAEP-256]
  encryption: [A256GCM]
"""


class DemoIssuer:
    """A throwaway ES256 issuer: it signs demo tokens and serves its JWK Set."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = {**es256_public_jwk(self._key), "kid": DEMO_KID, "alg": "ES256", "use": "sig"}
        self.url = ""

    def token(self, claims: dict[str, Any]) -> str:
        return es256_compact(self._key, {"alg": "ES256", "typ": "JWT", "kid": DEMO_KID}, claims)

    def claims(self, sub: str, scope: str, lifetime: int = 3600) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.url, "aud": DEMO_AUDIENCE, "sub": sub, "email": f"{sub}@example.com",
            "scope": scope, "iat": now, "exp": now + lifetime,
        }

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.jwk]})

    def encrypt(self, jws: str, recipient: rsa.RSAPublicKey) -> str:
        """A nested JWT (RFC 7519 §5.2): the signed token in a JWE (RSA-OAEP-256 + A256GCM) to the gateway."""
        header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": DEMO_ENC_KID, "cty": "JWT"}
        protected = _b64url(json.dumps(header).encode())
        cek, iv = os.urandom(32), os.urandom(12)
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        sealed = AESGCM(cek).encrypt(iv, jws.encode("ascii"), protected.encode("ascii"))
        parts = (recipient.encrypt(cek, oaep), iv, sealed[:-16], sealed[-16:])
        return ".".join([protected, *(_b64url(p) for p in parts)])


def _write_decryption_key(directory: Path, key: rsa.RSAPrivateKey) -> Path:
    """The gateway's demo private key as a JWK Set file (what a mounted Secret would hold)."""
    n = key.private_numbers()

    def b64(value: int) -> str:
        return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    jwk = {
        "kty": "RSA", "kid": DEMO_ENC_KID, "use": "enc", "alg": "RSA-OAEP-256",
        "n": b64(n.public_numbers.n), "e": b64(n.public_numbers.e), "d": b64(n.d), "p": b64(n.p), "q": b64(n.q),
        "dp": b64(n.dmp1), "dq": b64(n.dmq1), "qi": b64(n.iqmp),
    }  # fmt: skip
    path = directory / "demo-decryption-keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": [jwk]}, f)
    return path


async def echo(request: web.Request) -> web.Response:
    """The demo application: answers with what it received, so the claim headers show."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k: v for k, v in request.headers.items()},
            "body_bytes": len(body),
        }
    )


@dataclass
class Demo:
    issuer: DemoIssuer
    process: GatewayProcess
    runners: list[web.AppRunner]
    encryption_key: rsa.RSAPublicKey  # the gateway's public key, for the demo issuer to encrypt to
    config_path: Path

    async def close(self) -> None:
        await self.process.stop()
        for runner in self.runners:
            await runner.cleanup()
        shutil.rmtree(self.config_path.parent, ignore_errors=True)


async def _serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, bound_port(site)


def _authz_keys(authz_port: int | None) -> str:
    if authz_port is None:
        return ""
    return f'  authz_listen: "127.0.0.1:{authz_port}"\n  authz_dialect: auto\n  authz_path_prefix: /authz\n'


async def start_demo(port: int, admin_port: int, ready_timeout: float = 10.0, authz_port: int | None = None) -> Demo:
    issuer = DemoIssuer()
    issuer_app = web.Application()
    issuer_app.router.add_get("/jwks.json", issuer.handle)
    issuer_runner, issuer_port = await _serve_app(issuer_app)
    issuer.url = f"http://127.0.0.1:{issuer_port}/"
    echo_app = web.Application()
    echo_app.router.add_route("*", "/{tail:.*}", echo)
    echo_runner, echo_port = await _serve_app(echo_app)

    # A real directory, so that `gateway explain -c` and the admin /config can name the files.
    config_dir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    decryption_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys_file = _write_decryption_key(config_dir, decryption_key)
    text = DEMO_CONFIG.format(
        port=port, admin_port=admin_port, upstream_port=echo_port, issuer=issuer.url, audience=DEMO_AUDIENCE,
        decryption_keys=keys_file,
        authz=_authz_keys(authz_port),
    )
    config_path = config_dir / "gateway.yaml"
    config_path.write_text(text)
    DpopKey().save(config_dir / DPOP_KEY_FILE)  # the demo client's proof-of-possession key
    process = GatewayProcess(load_config(config_path), str(config_path))
    await process.start()
    deadline = time.monotonic() + ready_timeout
    while process.keystore.missing() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return Demo(issuer, process, [issuer_runner, echo_runner], decryption_key.public_key(), config_path)


def _instructions(demo: Demo) -> str:
    base = f"http://127.0.0.1:{demo.process.proxy_port}"
    admin = f"http://127.0.0.1:{demo.process.admin_port}"
    reader = demo.issuer.token(demo.issuer.claims("alice", "read"))
    admin_token = demo.issuer.token(demo.issuer.claims("bob", "read admin"))
    encrypted = demo.issuer.encrypt(demo.issuer.token(demo.issuer.claims("carol", "read")), demo.encryption_key)
    key_path = demo.config_path.parent / DPOP_KEY_FILE
    bound = demo.issuer.token({**demo.issuer.claims("dave", "read"), "cnf": {"jkt": DpopKey.load(key_path).jkt}})
    proof = f"python -m gateway dpop-proof --key {key_path} --method GET --url {base}/api/orders --token $TOKEN"
    return f"""
JWT sidecar gateway demo: gateway {base}, admin {admin}, demo issuer {demo.issuer.url}

# 200: a valid token; the echo upstream shows the claim headers it received (X-User-Id, X-User-Email, X-User-Scope)
curl -s -H 'Authorization: Bearer {reader}' {base}/api/orders

# 401: no token
curl -si {base}/api/orders

# 403: a valid token without the admin scope on /admin
curl -si -H 'Authorization: Bearer {reader}' {base}/admin/users

# 200: the same route with a token that has it
curl -s -H 'Authorization: Bearer {admin_token}' {base}/admin/users

# 200: a public route needs no token
curl -s {base}/public/hello

# 200: an encrypted token (a signed JWT inside a JWE to the gateway's key); the upstream sees carol's claims
curl -s -H 'Authorization: Bearer {encrypted}' {base}/api/orders

# DPoP (RFC 9449): a token bound to the demo client's key (cnf.jkt); each request signs a fresh proof
TOKEN={bound}
# DPoP 200: the bound token with its proof
curl -s -H "Authorization: DPoP $TOKEN" -H "DPoP: $({proof})" {base}/api/orders
# DPoP 401: the same token as a plain bearer token (no downgrade)
curl -si -H "Authorization: Bearer $TOKEN" {base}/api/orders

# metrics, readiness, the effective config and the keys the gateway holds
curl -s {admin}/metrics | grep gateway_jwt_verify_seconds_count
curl -s {admin}/readyz
curl -s {admin}/config
curl -s {admin}/keys

# why a token passes or fails, check by check (exit 0 allowed, 1 refused); "-" reads the token from stdin
gateway explain -c {demo.config_path} --path /api/orders {reader}
gateway explain -c {demo.config_path} --path /admin/users {reader}
gateway explain -c {demo.config_path} --path /api/orders {encrypted}
{_authz_instructions(demo, reader, admin_token)}
Ctrl-C stops the demo.
"""


def _authz_instructions(demo: Demo, reader: str, admin_token: str) -> str:
    """Decision mode: the checks nginx, Traefik and Envoy would send, and what each gets."""
    if not demo.process.authz_port:
        return ""
    authz = f"http://127.0.0.1:{demo.process.authz_port}"
    return f"""
Decision mode: the authz port {authz} answers checks; nothing is forwarded.

# 200: Traefik ForwardAuth's check; the answer carries the claim headers for Traefik to copy upstream
curl -si -H 'X-Forwarded-Method: GET' -H 'X-Forwarded-Uri: /api/orders' -H 'X-Forwarded-Host: demo' -H 'Authorization: Bearer {reader}' {authz}/check

# 403: nginx auth_request's check for /admin with a token that lacks the admin scope
curl -si -H 'X-Original-Method: GET' -H 'X-Original-URI: /public/../admin/users' -H 'Authorization: Bearer {reader}' {authz}/check

# 200: Envoy ext_authz's check (path_prefix /authz) with the admin scope
curl -si -H 'Authorization: Bearer {admin_token}' {authz}/authz/admin/users

# 401: Envoy ext_authz's check without a token
curl -si {authz}/authz/api/orders
"""


async def _run(port: int, admin_port: int, authz_port: int | None) -> int:
    demo = await start_demo(port, admin_port, authz_port=authz_port)
    print(_instructions(demo), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await demo.close()
    return 0


def run_demo(port: int = 8080, admin_port: int = 9901, authz_port: int | None = None) -> int:
    """`authz_port`: also open the decision port (gateway demo --authz)."""
    configure_logging()
    return asyncio.run(_run(port, admin_port, authz_port))
