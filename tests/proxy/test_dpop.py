"""DPoP (RFC 9449) on a running gateway: the scheme, the binding step, downgrade, replay, nonces, htu origin.

Tokens are minted by PyJWT through the test issuer, proofs by tests/proxy/dpop_client.py (PyJWT too).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.load import load_config
from gateway.dpop_state import SLOTS_PER_BUCKET, DpopShared, Nonces
from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.dpop_client import DpopClient
from tests.proxy.harness import Issuer, Upstream, raw_request, wait_for
from tests.proxy.pki import Pki, fetch, tls_block
from tests.proxy.test_http_table import seen_headers


def dpop_config(mode: str = "optional", nonce: bool = False, server_extra: str = "", max_age: str = "60s") -> str:
    text = BASE_CONFIG.replace(
        "    algorithms: [RS256, ES256]\n",
        "    algorithms: [RS256, ES256]\n"
        f"    dpop: {{{{mode: {mode}, algorithms: [ES256, EdDSA], max_age: {max_age}, nonce: {str(nonce).lower()}}}}}\n",
    )
    return text.replace("  max_token_bytes: 4096\n", "  max_token_bytes: 4096\n" + server_extra)


@pytest.fixture
async def dpop_gateway(make_gateway: GatewayFactory) -> GatewayProcess:
    return await make_gateway(dpop_config())


@pytest.fixture
def client() -> DpopClient:
    return DpopClient()


def bound_token(issuer: Issuer, client: DpopClient, **claims: Any) -> str:
    return issuer.token(cnf={"jkt": client.jkt}, **claims)


def dpop_headers(gateway: GatewayProcess, client: DpopClient, token: str, path: str = "/api/orders",
                 method: str = "GET", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": client.proof(method, url(gateway, path), token, **kw)}


async def _refusal(resp: aiohttp.ClientResponse) -> tuple[int, str, str]:
    body = json.loads(await resp.read())
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return resp.status, body["error"], resp.headers.get("WWW-Authenticate", "")


async def dpop_results(http: aiohttp.ClientSession, gateway: GatewayProcess) -> dict[str, float]:
    async with http.get(admin_url(gateway, "/metrics")) as resp:
        text = await resp.text()
    return {
        s.labels["result"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "gateway_dpop_checks_total" and s.labels["issuer"] == "corp"
    }


# --- the happy path ---------------------------------------------------------------------------------


async def test_bound_token_with_its_proof_is_forwarded_and_the_proof_is_not(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient, upstream: Upstream
) -> None:
    token = bound_token(issuer, client)
    headers = dpop_headers(dpop_gateway, client, token, "/api/orders")
    async with http.get(url(dpop_gateway, "/api/orders?page=2"), headers=headers) as resp:
        assert resp.status == 200
        record = json.loads(await resp.read())
        assert "DPoP-Nonce" not in resp.headers
    seen = seen_headers(record)
    assert "dpop" not in seen  # SPEC: the proof is not forwarded upstream
    assert seen["authorization"] == [f"DPoP {token}"]
    assert seen["x-user-id"] == ["alice"]
    assert (await dpop_results(http, dpop_gateway)) == {"ok": 1}


async def test_dpop_scheme_is_case_insensitive_and_unbound_bearer_still_works_when_optional(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    headers = {"Authorization": f"dpop {token}", "DPoP": client.proof("GET", url(dpop_gateway, "/api/x"), token)}
    async with http.get(url(dpop_gateway, "/api/x"), headers=headers) as resp:
        assert resp.status == 200
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert resp.status == 200


# --- no downgrade, no unbound token under DPoP, required mode ------------------------------------


@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_downgrade_bound_token_as_bearer_is_refused_in_every_mode(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient, mode: str
) -> None:
    gateway = await make_gateway(dpop_config(mode))
    token = bound_token(issuer, client)
    # Even with a valid proof alongside: the Bearer scheme makes it a bearer token (RFC 9449 §7.2).
    headers = {"Authorization": f"Bearer {token}", "DPoP": client.proof("GET", url(gateway, "/api/x"), token)}
    async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_token")
    assert challenge.startswith('Bearer realm="gateway", error="invalid_token", error_description="the token is bound')


async def test_unbound_token_under_the_dpop_scheme_is_refused(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = issuer.token()
    async with http.get(url(dpop_gateway, "/api/x"), headers=dpop_headers(dpop_gateway, client, token, "/api/x")) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_token")
    assert challenge.startswith('DPoP error="invalid_token", error_description="the token is not bound')
    assert challenge.endswith('algs="ES256 EdDSA"')
    assert (await dpop_results(http, dpop_gateway)) == {"dpop_binding_mismatch": 1}


async def test_required_mode_refuses_tokens_without_cnf_jkt(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    gateway = await make_gateway(dpop_config("required"))
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {issuer.token()}"}) as resp:
        assert (await _refusal(resp))[:2] == (401, "invalid_token")
    token = bound_token(issuer, client)
    async with http.get(url(gateway, "/api/x"), headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
        assert resp.status == 200
    assert (await dpop_results(http, gateway)) == {"dpop_missing": 1, "ok": 1}


async def test_mode_off_the_dpop_scheme_is_not_a_token(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient, upstream: Upstream
) -> None:
    gateway = await make_gateway(dpop_config("false"))  # YAML false reads as off
    token = bound_token(issuer, client)
    headers = dpop_headers(gateway, client, token, "/api/x")
    async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error, challenge) == (401, "unauthorized", 'Bearer realm="gateway"')  # no token at all
    async with http.get(url(gateway, "/optional/x"), headers=headers) as resp:
        assert resp.status == 200
        record = json.loads(await resp.read())
    assert "x-user-id" not in seen_headers(record)
    assert "dpop" in seen_headers(record)  # with DPoP off everywhere the gateway leaves the header alone


# --- proof faults on the request path (§4.3), each with its reason -----------------------------------


async def test_step1_missing_proof(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"DPoP {token}"}) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_dpop_proof")
    assert challenge == 'DPoP error="invalid_dpop_proof", error_description="a DPoP proof header is required", algs="ES256 EdDSA"'
    assert (await dpop_results(http, dpop_gateway)) == {"dpop_missing": 1}


async def test_step1_more_than_one_dpop_header(
    dpop_gateway: GatewayProcess, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    target = url(dpop_gateway, "/api/x")
    proof1, proof2 = client.proof("GET", target, token), client.proof("GET", target, token)
    head = (
        f"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:{dpop_gateway.proxy_port}\r\nAuthorization: DPoP {token}\r\n"
        f"DPoP: {proof1}\r\nDPoP: {proof2}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, data = await raw_request(dpop_gateway.proxy_port, head)
    assert status == 401 and b'error="invalid_dpop_proof"' in data and b"more than one DPoP proof" in data


@pytest.mark.parametrize(
    "fault, reason_text",
    [
        ({"method": "POST"}, "htm does not match"),
        ({"path": "/api/other"}, "htu does not match"),
        ({"iat": time.time() - 3600}, "too old"),
        ({"iat": time.time() + 3600}, "created in the future"),
        ({"ath": "x" * 43}, "ath does not match"),
        ({"headers": {"typ": "JWT"}}, "typ is not dpop+jwt"),
        ({"headers": {"alg": "ES256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}}, "private key members"),
        ({"garbage": True}, "not a well-formed JWT"),
    ],
)
async def test_proof_faults_are_invalid_dpop_proof(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient,
    fault: dict[str, Any], reason_text: str,
) -> None:
    token = bound_token(issuer, client)
    target = url(dpop_gateway, fault.pop("path", "/api/x"))
    method = fault.pop("method", "GET")
    proof = "not.a.jwt" if fault.pop("garbage", False) else client.proof(method, target, token, **fault)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    async with http.get(url(dpop_gateway, "/api/x"), headers=headers) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_dpop_proof")
    assert reason_text in challenge
    assert (await dpop_results(http, dpop_gateway)) == {"dpop_invalid": 1}


async def test_proof_header_larger_than_max_token_bytes(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    proof = client.proof("GET", url(dpop_gateway, "/api/x"), token, pad="x" * 4096)
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"DPoP {token}", "DPoP": proof}) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_dpop_proof") and "size limit" in challenge


async def test_step12_proof_by_another_key_than_the_token_is_bound_to(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    thief = DpopClient()
    headers = {"Authorization": f"DPoP {token}", "DPoP": thief.proof("GET", url(dpop_gateway, "/api/x"), token)}
    async with http.get(url(dpop_gateway, "/api/x"), headers=headers) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_token")
    assert challenge.startswith('DPoP error="invalid_token", error_description="the DPoP proof')
    assert (await dpop_results(http, dpop_gateway)) == {"dpop_binding_mismatch": 1}


async def test_token_faults_under_the_dpop_scheme_answer_with_a_dpop_challenge(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client, exp=int(time.time()) - 3600)
    async with http.get(url(dpop_gateway, "/api/x"), headers=dpop_headers(dpop_gateway, client, token, "/api/x")) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_token")
    assert challenge == 'DPoP error="invalid_token", error_description="the token has expired", algs="ES256 EdDSA"'


async def test_malformed_cnf_is_a_token_fault(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = issuer.token(cnf="not-an-object")
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert (await _refusal(resp))[:2] == (401, "invalid_token")


# --- replay and the cache -----------------------------------------------------------------------


async def test_replayed_proof_is_refused_and_the_cached_token_still_needs_a_fresh_one(
    dpop_gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    token = bound_token(issuer, client)
    headers = dpop_headers(dpop_gateway, client, token, "/api/x")
    async with http.get(url(dpop_gateway, "/api/x"), headers=headers) as resp:
        assert resp.status == 200
    async with http.get(url(dpop_gateway, "/api/x"), headers=headers) as resp:  # the token is now cached
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_dpop_proof") and "used before" in challenge
    # The cached token with no proof, or as Bearer, is refused as well: binding runs on every request.
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"DPoP {token}"}) as resp:
        assert resp.status == 401
    async with http.get(url(dpop_gateway, "/api/x"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401
    async with http.get(url(dpop_gateway, "/api/x"), headers=dpop_headers(dpop_gateway, client, token, "/api/x")) as resp:
        assert resp.status == 200
    results = await dpop_results(http, dpop_gateway)
    assert results == {"ok": 2, "dpop_replayed": 1, "dpop_missing": 1, "dpop_binding_mismatch": 1}
    # The binding runs inside authentication: its refusal is the verification result (SPEC labels).
    verified = {
        result: dpop_gateway.metrics.registry.get_sample_value(
            "gateway_jwt_verify_seconds_count", {"issuer": "corp", "result": result})
        for result in ("ok", "dpop_replayed", "dpop_missing", "dpop_binding_mismatch")
    }
    assert verified == {"ok": 2, "dpop_replayed": 1, "dpop_missing": 1, "dpop_binding_mismatch": 1}


# --- nonces (RFC 9449 §8, §9) ------------------------------------------------------------------------


async def test_step10_nonce_flow(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    gateway = await make_gateway(dpop_config(nonce=True))
    token = bound_token(issuer, client)
    target = url(gateway, "/api/x")
    # 1. No nonce: use_dpop_nonce with exactly one fresh DPoP-Nonce.
    async with http.get(target, headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
        status, error, challenge = await _refusal(resp)
        nonces = resp.headers.getall("DPoP-Nonce")
    assert (status, error) == (401, "use_dpop_nonce") and challenge.startswith('DPoP error="use_dpop_nonce"')
    assert len(nonces) == 1
    # 2. With it: accepted, and no new nonce while it is current.
    async with http.get(target, headers=dpop_headers(gateway, client, token, "/api/x", nonce=nonces[0])) as resp:
        assert resp.status == 200
        assert "DPoP-Nonce" not in resp.headers
    # 3. A made-up or foreign nonce: refused with a fresh one.
    for bad in ("made-up", Nonces(b"another key" * 3, time.time).current(60)):
        async with http.get(target, headers=dpop_headers(gateway, client, token, "/api/x", nonce=bad)) as resp:
            assert (await _refusal(resp))[1] == "use_dpop_nonce"
            assert resp.headers["DPoP-Nonce"] == nonces[0]
    # 4. One issued a period ago (every worker derives it from the process's key) still counts,
    # and the 200 carries the current one (§8.2) and is not cacheable.
    previous = Nonces(gateway.dpop_shared.nonce_key, lambda: time.time() - 60).current(60)
    async with http.get(target, headers=dpop_headers(gateway, client, token, "/api/x", nonce=previous)) as resp:
        assert resp.status == 200
        assert resp.headers.getall("DPoP-Nonce") == [nonces[0]]
        assert resp.headers["Cache-Control"] == "no-store"
    # 5. Two periods ago: stale.
    stale = Nonces(gateway.dpop_shared.nonce_key, lambda: time.time() - 120).current(60)
    async with http.get(target, headers=dpop_headers(gateway, client, token, "/api/x", nonce=stale)) as resp:
        assert (await _refusal(resp))[1] == "use_dpop_nonce"
    assert (await dpop_results(http, gateway)) == {"dpop_nonce": 4, "ok": 2}


# --- the external URI for htu -----------------------------------------------------------------


async def test_public_origin_is_what_clients_sign(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient
) -> None:
    gateway = await make_gateway(dpop_config(server_extra='  public_origin: "https://API.example.com:443"\n'))
    token = bound_token(issuer, client)
    good = {"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", "https://api.example.com/api/x", token)}
    async with http.get(url(gateway, "/api/x"), headers=good) as resp:
        assert resp.status == 200
    async with http.get(url(gateway, "/api/x"), headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
        assert resp.status == 401  # the listener's own origin is not the public one


@pytest.mark.parametrize("trusted, expect", [("127.0.0.0/8", 200), ("10.0.0.0/8", 401)])
async def test_forwarding_headers_only_from_trusted_proxies(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient,
    trusted: str, expect: int,
) -> None:
    gateway = await make_gateway(dpop_config(server_extra=f'  trusted_proxies: ["{trusted}"]\n'))
    token = bound_token(issuer, client)
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": client.proof("GET", "https://shop.example.com/api/x", token),
        # A proxy that appends: the client's own value first, the proxy's (the one believed) last.
        "X-Forwarded-Proto": "http, https",
        "X-Forwarded-Host": "evil.example.com, shop.example.com",
    }
    async with http.get(url(gateway, "/api/x"), headers=headers) as resp:
        assert resp.status == expect
    # Whatever the peer, a proof for our own listener origin holds when no forwarding header is sent.
    async with http.get(url(gateway, "/api/x"), headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
        assert resp.status == 200


# --- the authz port (decision mode): htu from the conveyed request -------------------------------


@pytest.mark.parametrize("trusted, signed_origin", [("", "http://app.example"), ("127.0.0.0/8", "https://app.example")])
async def test_decision_mode_checks_the_proof_against_the_conveyed_uri(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient,
    trusted: str, signed_origin: str,
) -> None:
    extra = '  authz_listen: "127.0.0.1:0"\n' + (f'  trusted_proxies: ["{trusted}"]\n' if trusted else "")
    gateway = await make_gateway(dpop_config(server_extra=extra))
    token = bound_token(issuer, client)
    check = f"http://127.0.0.1:{gateway.authz_port}/check"
    # Traefik conveys the request: method, URI, host and scheme in X-Forwarded-* headers.
    conveyed = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/x?y=1", "X-Forwarded-Host": "app.example",
                "X-Forwarded-Proto": "https", "Authorization": f"DPoP {token}"}
    good = client.proof("GET", f"{signed_origin}/api/x", token)
    async with http.get(check, headers={**conveyed, "DPoP": good}) as resp:
        assert resp.status == 200 and await resp.read() == b""
        assert resp.headers["X-User-Id"] == "alice"
    other = "https://app.example" if signed_origin.startswith("http:") else "http://app.example"
    async with http.get(check, headers={**conveyed, "DPoP": client.proof("GET", f"{other}/api/x", token)}) as resp:
        status, error, challenge = await _refusal(resp)
    assert (status, error) == (401, "invalid_dpop_proof") and "htu does not match" in challenge
    async with http.get(check, headers={**conveyed, "DPoP": good}) as resp:
        assert (await _refusal(resp))[:2] == (401, "invalid_dpop_proof")  # replayed


async def test_a_full_replay_memory_fails_closed_with_503(
    tmp_path: Path, http: aiohttp.ClientSession, issuer: Issuer, upstream: Upstream, client: DpopClient
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(dpop_config().format(upstream_port=upstream.port, issuer_url=issuer.url, upstream_timeout="1s"))
    gateway = GatewayProcess(load_config(path), str(path), DpopShared.create(slots=SLOTS_PER_BUCKET))  # one bucket
    await gateway.start()
    try:
        await wait_for(lambda: not gateway.keystore.missing())
        token = bound_token(issuer, client)
        for _ in range(SLOTS_PER_BUCKET):
            async with http.get(url(gateway, "/api/x"), headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
                assert resp.status == 200
        async with http.get(url(gateway, "/api/x"), headers=dpop_headers(gateway, client, token, "/api/x")) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"]
            assert (await _refusal(resp))[1] == "temporarily_unavailable"
        assert (await dpop_results(http, gateway)) == {"ok": SLOTS_PER_BUCKET, "dpop_replay_full": 1}
    finally:
        await gateway.stop()


async def test_access_and_debug_logs_name_the_check_never_the_proof_or_token(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer, client: DpopClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await make_gateway(dpop_config(nonce=True, server_extra="  log_level: debug\n"))
    stream = io.StringIO()
    gateway.access_log._stream = stream
    token = bound_token(issuer, client)
    target = url(gateway, "/api/x")
    secrets: list[str] = [token, token.split(".")[1]]
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        for kw in ({}, {"htm": "POST"}, {"nonce": "made-up"}):
            proof = client.proof("GET", target, token, **kw)
            secrets += [proof, proof.split(".")[1], proof.split(".")[2]]
            async with http.get(target, headers={"Authorization": f"DPoP {token}", "DPoP": proof}) as resp:
                nonce = resp.headers.get("DPoP-Nonce")
                assert resp.status == 401
        assert nonce is not None
        proof = client.proof("GET", target, token, nonce=nonce)
        secrets += [proof, nonce]
        async with http.get(target, headers={"Authorization": f"DPoP {token}", "DPoP": proof}) as resp:
            assert resp.status == 200
    gateway.access_log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["decision"], line["reason"]) for line in lines] == [
        ("use_dpop_nonce", "dpop_nonce"), ("invalid_dpop_proof", "dpop_bad_htm"), ("use_dpop_nonce", "dpop_nonce"),
        ("allow", None),
    ]
    logged = stream.getvalue() + "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "DPoP proof's htm does not match" in logged  # the debug line names the failed check
    for secret in secrets:
        assert secret not in logged


# --- a token bound twice (RFC 9449 and RFC 8705) must satisfy both ----------------------------------


async def test_token_bound_to_a_key_and_a_certificate_needs_both(
    make_gateway: GatewayFactory, issuer: Issuer, client: DpopClient, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    gateway = await make_gateway(dpop_config(server_extra="  tls:\n" + tls_block("optional")))
    token = issuer.token(cnf={"jkt": client.jkt, "x5t#S256": pki.client.thumbprint})
    target = f"https://127.0.0.1:{gateway.proxy_port}/api/x"

    def with_proof() -> dict[str, str]:
        return {"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", target, token)}

    status, body = await fetch(gateway, pki.client_ctx(pki.client), "/api/x", headers=with_proof())
    assert status == 200 and body["path"] == "/api/x"
    # Either binding missing is a refusal: no proof, no certificate, another certificate.
    for ctx, headers in (
        (pki.client_ctx(pki.client), {"Authorization": f"Bearer {token}"}),
        (pki.client_ctx(), with_proof()),
        (pki.client_ctx(pki.client_b), with_proof()),
    ):
        status, body = await fetch(gateway, ctx, "/api/x", headers=headers)
        assert (status, body["error"]) == (401, "invalid_token")
