"""`gateway explain`: one token per refusal reason, each rendered from the server's own checks, the answer and exit code."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt  # PyJWT: tokens are minted by a reference library, never by our own code
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.explain import Explanation, explain
from tests.proxy.harness import Issuer
from tests.proxy.pki import Ca

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = 1_800_000_000
ISS = "https://corp.example/"
HS_SECRET = "explain-never-prints-this-secret-0123456789"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


CONFIG = """\
tokens:
  - header: Authorization
    prefix: "Bearer "
issuers:
  - name: corp
    issuer: "https://corp.example/"
    audiences: [orders-api]
    algorithms: [RS256]
    clock_skew: 30s
    max_lifetime: 2h
    jwks: {file: jwks.json}
  - name: shared
    issuer: "https://shared.example/"
    algorithms: [HS256]
    secret: {file: hs.secret}
  - name: remote
    issuer: "https://remote.example/"
    algorithms: [RS256]
    jwks: {uri: "https://remote.example/jwks.json"}
forward:
  claims_to_headers:
    sub: X-User-Id
routes:
  - name: public
    match: {prefix: /public}
    auth: public
  - name: corp-only
    match: {prefix: /corp}
    issuers: [corp]
  - name: admin
    match: {prefix: /admin, methods: [POST]}
    claims:
      scope: {contains: admin}
      email_verified: {equals: true}
  - name: api
    match: {prefix: /api}
"""


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    pub = KEY.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": _b64(pub.n), "e": _b64(pub.e)}
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (root / "hs.secret").write_text(HS_SECRET)
    path = root / "gateway.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def config(config_path: Path) -> GatewayConfig:
    return load_config(config_path)


def token(key: Any = KEY, headers: dict[str, Any] | None = None, alg: str = "RS256", **claims: Any) -> str:
    body: dict[str, Any] = {"iss": ISS, "aud": "orders-api", "sub": "alice", "iat": NOW - 60, "exp": NOW + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": "k1", **(headers or {})})


async def run(config: GatewayConfig, tok: str, path: str = "/api/orders", method: str = "GET") -> Explanation:
    return await explain(config, tok, method=method, path=path, offline=True, clock=lambda: float(NOW))


def failed(result: Explanation) -> list[str]:
    return [line.strip() for line in result.lines if line.strip().startswith("FAIL")]


async def test_allowed_shows_every_step_and_the_claim_headers(config: GatewayConfig) -> None:
    result = await run(config, token())
    assert result.allowed
    text = result.text()
    for heading in ("token", "route", "issuer", "key", "signature", "claims", "claim rules", "answer"):
        assert heading in result.lines
    assert "ok   corp: iss 'https://corp.example/' is this issuer's" in text
    assert " -   shared: not this token's: expects iss 'https://shared.example/'" in text
    assert "ok   signature: verifies with kid 'k1' (RSA, alg RS256)" in text
    assert "ok   exp: 1800000600 (2027-01-15T08:10:00Z) > now 1800000000 (2027-01-15T08:00:00Z) - skew 30s (600s left)" in text
    assert "ok   aud: 'orders-api', accepted: one of ['orders-api']" in text
    assert "allowed: the request is forwarded upstream" in text and "X-User-Id: alice" in text
    assert failed(result) == []


def _challenge(description: str) -> str:
    return f'WWW-Authenticate: Bearer realm="gateway", error="invalid_token", error_description="{description}"'


# One token per refusal reason: (id, token factory, path, the FAIL line it shows, status line, challenge description)
CASES: list[tuple[str, Any, str, str, str]] = [
    ("malformed", lambda: "not.a-token", "compact JWS: The token is not a compact JWS", "401 invalid_token", "the token is malformed"),
    ("too_large", lambda: token(pad="x" * 9000), "compact JWS: The token exceeds the size limit.", "401 invalid_token", "the token is too large"),
    ("alg_not_allowed", lambda: token(alg="RS384"), "alg allow-list: RS384 not in ['RS256']", "401 invalid_token",
     "the token's algorithm is not allowed"),
    ("unsupported_crit", lambda: token(headers={"crit": ["ext"], "ext": 1}), "compact JWS: The token requires a header extension",
     "401 invalid_token", "the token requires an unsupported extension"),
    ("bad_type", lambda: token(headers={"typ": "dpop+jwt"}), "typ: 'dpop+jwt', accepted: ['JWT', 'at+jwt']", "401 invalid_token",
     "the token's type is not allowed"),
    ("unknown_key", lambda: token(headers={"kid": "gone"}), "key selection: kid 'gone', alg RS256; the set has kids ['k1']",
     "401 invalid_token", "the token's signing key is unknown"),
    ("bad_signature", lambda: token(key=OTHER_KEY), "signature: no candidate verifies it (1 tried)", "401 invalid_token",
     "the token's signature is invalid"),
    ("bad_issuer", lambda: token(iss="https://stranger.example/"), "iss: 'https://stranger.example/' names no configured issuer",
     "401 invalid_token", "the token's issuer is not accepted here"),
    ("bad_audience", lambda: token(aud="billing"), "aud: 'billing', accepted: one of ['orders-api']", "401 invalid_token",
     "the token's audience is not accepted"),
    ("expired", lambda: token(exp=NOW - 31), "exp: 1799999969 (2027-01-15T07:59:29Z) <= now", "401 invalid_token",
     "the token has expired"),
    ("not_yet_valid", lambda: token(nbf=NOW + 31), "nbf: 1800000031 (2027-01-15T08:00:31Z) > now", "401 invalid_token",
     "the token is not valid yet"),
    ("issued_in_future", lambda: token(iat=NOW + 31), "iat: 1800000031 (2027-01-15T08:00:31Z) > now", "401 invalid_token",
     "the token is not valid yet"),
    ("missing_expiration", lambda: token(exp=None), "exp: absent, and require_expiration is on", "401 invalid_token",
     "the token has no expiration"),
    ("lifetime_too_long", lambda: token(exp=NOW + 3 * 3600), "lifetime: exp - iat = 10860s, max_lifetime 7200s",
     "401 invalid_token", "the token's lifetime is too long"),
    ("malformed_claim", lambda: token(exp="tomorrow"), "exp, nbf, iat types: NumericDate required", "401 invalid_token",
     "the token is malformed"),
]


@pytest.mark.parametrize(("tok", "fail", "status", "description"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_refusal_names_its_check(config: GatewayConfig, tok: Any, fail: str, status: str, description: str) -> None:
    result = await run(config, tok())
    assert not result.allowed
    [line] = failed(result)
    assert line.startswith(f"FAIL {fail}"), line
    assert result.lines[-2:] == [f"  {status}", f"  {_challenge(description)}"]


async def test_issuer_not_accepted_on_the_route(config: GatewayConfig) -> None:
    hs = token(key=HS_SECRET.encode(), alg="HS256", iss="https://shared.example/")
    result = await run(config, hs, path="/corp/x")
    assert failed(result) == ["FAIL route's issuers: shared not in ['corp']"]
    assert result.lines[-2] == "  401 invalid_token"


async def test_claim_rules_show_each_outcome_and_403(config: GatewayConfig) -> None:
    result = await run(config, token(scope="read write", email_verified=True), path="/admin/users", method="POST")
    assert not result.allowed
    text = result.text()
    assert 'FAIL scope contains "admin": value "read write"' in text
    assert "ok   email_verified equals true: value true" in text
    assert result.lines[-2:] == [
        "  403 insufficient_scope",
        '  WWW-Authenticate: Bearer realm="gateway", error="insufficient_scope", '
        'error_description="the token lacks a claim this route requires"',
    ]


async def test_no_route_bad_path_and_public(config: GatewayConfig) -> None:
    no_route = await run(config, token(), path="/nowhere")
    assert failed(no_route) == ["FAIL match: no route matches GET /nowhere"] and no_route.lines[-1] == "  404 no_route"
    bad = await run(config, token(), path="/api/%2e%2e%2f..")
    assert failed(bad)[0].startswith("FAIL path: cannot be normalized safely") and bad.lines[-1] == "  400 bad_path"
    public = await run(config, "whatever", path="/public/x")
    assert public.allowed and "ok   auth: public: no token is looked at" in public.text()


async def test_offline_does_not_fetch_remote_keys(config: GatewayConfig) -> None:
    result = await run(config, token(iss="https://remote.example/"))
    assert failed(result)[-1] == "FAIL key source: uri keys are not fetched with --offline"
    assert result.lines[-1] == "  503 keys_unavailable"


async def test_online_fetches_keys_as_the_server_does(tmp_path: Path) -> None:
    idp = Issuer(KEY, ec.generate_private_key(ec.SECP256R1()))
    await idp.start()
    try:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f'issuers:\n  - name: idp\n    issuer: "{idp.url}"\n    algorithms: [RS256]\n'
            f'    jwks: {{uri: "{idp.url}jwks.json", allow_http: true}}\nroutes:\n  - {{name: api, match: {{prefix: /}}}}\n'
        )
        result = await explain(load_config(path), idp.token(), path="/x")
        assert result.allowed, result.text()
        assert idp.fetches == 1
    finally:
        assert idp.runner is not None
        await idp.runner.cleanup()


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "explain", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_cli_exit_codes_stdin_and_nothing_secret(config_path: Path) -> None:
    # A token valid now (the CLI runs on the real clock); read from stdin, so it never lands in shell history.
    import time

    now = int(time.time())
    good = token(iat=now - 60, exp=now + 600)
    allowed = _cli("-c", str(config_path), "--path", "/api/x", "--offline", "-", stdin=f"Bearer {good}\n")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    refused = _cli("-c", str(config_path), "--path", "/api/x", "--offline", token(iat=now - 60, exp=now - 3600))
    assert refused.returncode == 1 and "401 invalid_token" in refused.stdout
    for result in (allowed, refused):
        assert good.rsplit(".", 1)[1] not in result.stdout  # never the signature
        assert HS_SECRET not in result.stdout + result.stderr
        assert _b64(KEY.public_key().public_numbers().n)[:40] not in result.stdout  # nor a key
    bad_config = config_path.parent / "bad.yaml"
    bad_config.write_text("routes: 3\n")
    assert _cli("-c", str(bad_config), good).returncode == 2
    assert _cli("-c", str(config_path), "-", stdin="").returncode == 2
    assert _cli("--bogus").returncode == 2


async def test_certificate_binding_step(config: GatewayConfig) -> None:
    client = Ca("explain-ca").issue("client", server=False)
    bound = token(cnf={"x5t#S256": client.thumbprint})

    async def run_with(cert: str | None) -> Explanation:
        return await explain(config, bound, path="/api/orders", offline=True, clock=lambda: float(NOW), client_certificate=cert)

    allowed = await run_with(client.thumbprint)
    assert allowed.allowed and "sender binding (DPoP, mTLS)" in allowed.lines
    assert f"ok   cnf x5t#S256: the token names {client.thumbprint}; the client certificate's is {client.thumbprint}" in allowed.text()
    refused = await run_with(None)
    assert not refused.allowed
    assert failed(refused) == [f"FAIL cnf x5t#S256: the token names {client.thumbprint}; no verified client certificate"]
    assert "401 invalid_token" in refused.text()
    unbound = await run(config, token())
    assert " -   cnf x5t#S256: absent: the token is not bound to a client certificate" in unbound.text()


def test_cli_client_cert(config_path: Path, tmp_path: Path) -> None:
    import time

    client = Ca("explain-cli-ca").issue("client", server=False)
    cert_path, _ = client.write(tmp_path, "client")
    now = int(time.time())
    bound = token(iat=now - 60, exp=now + 600, cnf={"x5t#S256": client.thumbprint})
    args = ("-c", str(config_path), "--path", "/api/x", "--offline")
    assert _cli(*args, "--client-cert", str(cert_path), bound).returncode == 0
    assert _cli(*args, bound).returncode == 1
    assert _cli(*args, "--client-cert", str(tmp_path / "missing.pem"), bound).returncode == 2
    assert _cli(*args, "--client-cert", str(config_path), bound).returncode == 2  # not PEM
