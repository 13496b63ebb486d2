"""`gateway explain` shows the DPoP binding step: the token's cnf.jkt, the scheme, and with --dpop the proof's checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.explain import Explanation, explain
from tests.proxy.dpop_client import DpopClient
from tests.test_explain import CONFIG, NOW, config_path, token  # noqa: F401  (config_path is a fixture)

CLIENT = DpopClient()


@pytest.fixture(scope="module")
def config(config_path: Path) -> GatewayConfig:  # noqa: F811
    path = config_path.parent / "dpop.yaml"
    path.write_text(CONFIG.replace("    jwks: {file: jwks.json}\n", "    jwks: {file: jwks.json}\n    dpop: {mode: optional}\n", 1))
    return load_config(path)


async def run(config: GatewayConfig, tok: str, proof: str | None = None) -> Explanation:
    return await explain(config, tok, path="/api/orders", host="app.example", offline=True, clock=lambda: float(NOW),
                         dpop_proof=proof)


def binding_lines(result: Explanation) -> list[str]:
    start = result.lines.index("sender binding (DPoP, mTLS)")
    end = next(i for i in range(start + 1, len(result.lines)) if not result.lines[i].startswith("  "))
    # The certificate binding (RFC 8705) records in the same step; these tests look at DPoP's lines.
    return [line.strip() for line in result.lines[start + 1:end] if "x5t#S256" not in line]


async def test_unbound_bearer_token_passes_the_binding_step(config: GatewayConfig) -> None:
    result = await run(config, token())
    assert result.allowed
    assert binding_lines(result) == [
        "-   cnf.jkt: absent: the token is not bound to a key",
        "ok   Bearer scheme: an unbound token, DPoP mode optional",
    ]


async def test_bound_token_as_bearer_fails_the_binding_step(config: GatewayConfig) -> None:
    result = await run(config, token(cnf={"jkt": CLIENT.jkt}))
    assert not result.allowed
    assert binding_lines(result)[-1] == (
        "FAIL Bearer scheme: the token is bound to a key: send it with the DPoP scheme and a proof"
    )
    assert "  401 invalid_token" in result.lines


async def test_bound_token_with_its_proof_shows_each_binding_check(config: GatewayConfig) -> None:
    tok = token(cnf={"jkt": CLIENT.jkt})
    result = await run(config, tok, CLIENT.proof("GET", "http://app.example/api/orders", tok))
    assert result.allowed, result.text()
    lines = binding_lines(result)
    assert lines[0] == f"-   cnf.jkt: bound to key {CLIENT.jkt}"
    assert lines[1].startswith("ok   proof: GET http://app.example/api/orders, iat ")
    assert lines[2:] == ["ok   key binding: the proof's key thumbprint is cnf.jkt", "ok   replay: jti not seen before in its window"]


async def test_a_proof_for_another_uri_fails_with_the_dpop_challenge(config: GatewayConfig) -> None:
    tok = token(cnf={"jkt": CLIENT.jkt})
    result = await run(config, tok, CLIENT.proof("GET", "https://app.example/api/orders", tok, iat=time.time()))
    assert not result.allowed
    assert binding_lines(result)[-1] == "FAIL proof: The DPoP proof's htu does not match the request URI."
    assert "  401 invalid_dpop_proof" in result.lines
    assert any(line.startswith('  WWW-Authenticate: DPoP error="invalid_dpop_proof"') for line in result.lines)
