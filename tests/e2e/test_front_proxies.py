"""nginx (auth_request) and Envoy (HTTP ext_authz) in front of an echo upstream, the gateway deciding.

Each proxy runs with its configuration from deploy/decision/ (the one README shows); requests
go to the proxy as raw bytes, so no client normalizes a path on the way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sanitize import normalize_path
from gateway.server import GatewayProcess
from tests.e2e.front_proxies import FrontProxy, start_front
from tests.proxy.conftest import GatewayFactory
from tests.proxy.harness import Issuer, Upstream, free_port, raw_request
from tests.proxy.test_decision import authz_config

CLAIM_HEADERS = ("x-user-id", "x-user-email", "x-user-roles", "x-jwt-payload")


@dataclass
class Setup:
    front: FrontProxy
    gateway: GatewayProcess
    upstream: Upstream
    issuer: Issuer


@pytest.fixture(params=["nginx", "envoy"])
async def setup(
    request: pytest.FixtureRequest, make_gateway: GatewayFactory, upstream: Upstream, issuer: Issuer, tmp_path: Path
) -> AsyncIterator[Setup]:
    kind: str = request.param
    gateway = await make_gateway(authz_config(dialect=kind))
    front = await start_front(kind, tmp_path / kind, upstream.port, gateway.authz_port, free_port())
    try:
        yield Setup(front, gateway, upstream, issuer)
    finally:
        front.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(s: Setup, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
               method: str = "GET") -> Answer:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    head = f"{method} {target} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    status, data = await raw_request(s.front.port, head.encode())
    raw_head, _, body = data.partition(b"\r\n\r\n")
    fields = {}
    for line in raw_head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return Answer(status, fields, body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seen_headers(upstream: Upstream) -> dict[str, str]:
    return {k.lower(): v for k, v in upstream.seen[-1]["headers"]}


def nginx_or(s: Setup, nginx: int, other: int) -> int:
    # nginx's auth_request turns anything but 2xx/401/403 into 500: the gateway answers it 403.
    return nginx if s.front.kind == "nginx" else other


async def test_valid_token_reaches_upstream_with_claim_headers(setup: Setup) -> None:
    s = setup
    token = s.issuer.token(email="alice@example.com", realm_access={"roles": ["ops", "dev"]})
    answer = await send(s, "/api/orders?page=2", bearer(token))
    assert answer.status == 200, answer
    seen = seen_headers(s.upstream)
    assert seen["x-user-id"] == "alice" and seen["x-user-email"] == "alice@example.com"
    assert seen["x-user-roles"] == "ops,dev" and seen["x-jwt-payload"] == token.split(".")[1]
    assert s.upstream.seen[-1]["path"] == "/api/orders?page=2"


@pytest.mark.parametrize("case", ["no_token", "malformed", "bad_signature", "expired", "wrong_audience", "claim_rule",
                                  "two_places", "no_route"])
async def test_each_refusal_reaches_the_client_with_its_status(setup: Setup, case: str) -> None:
    s = setup
    good = s.issuer.token()
    forged = good[: good.rindex(".") + 1] + ("A" * 20)
    target, headers, want, challenge = {
        "no_token": ("/api/x", {}, 401, 'Bearer realm="gateway"'),
        "malformed": ("/api/x", bearer("a.b.c"), 401, 'error="invalid_token"'),
        "bad_signature": ("/api/x", bearer(forged), 401, 'error="invalid_token"'),
        "expired": ("/api/x", bearer(s.issuer.token(exp=1000)), 401, "the token has expired"),
        "wrong_audience": ("/api/x", bearer(s.issuer.token(aud="other")), 401, "audience"),
        "claim_rule": ("/admin/x", bearer(good), 403, None),
        "two_places": (f"/api/x?access_token={good}", bearer(good), nginx_or(s, 403, 400), None),
        "no_route": ("/nowhere", {}, nginx_or(s, 403, 404), None),
    }[case]
    before = len(s.upstream.seen)
    answer = await send(s, target, headers)
    assert answer.status == want, (case, answer.status, answer.body[:200])
    assert len(s.upstream.seen) == before  # nothing was forwarded
    if challenge is not None and want == 401:
        assert challenge in answer.headers["www-authenticate"]
    if s.front.kind == "envoy":  # Envoy passes the gateway's JSON body on; nginx writes its own page
        assert json.loads(answer.body)["error"]


async def test_keys_unavailable_fails_closed(
    make_gateway: GatewayFactory, upstream: Upstream, issuer: Issuer, tmp_path: Path
) -> None:
    issuer.failing = True
    for kind, want in (("nginx", 500), ("envoy", 503)):
        gateway = await make_gateway(authz_config(dialect=kind), wait_keys=False)
        front = await start_front(kind, tmp_path / kind, upstream.port, gateway.authz_port, free_port())
        try:
            s = Setup(front, gateway, upstream, issuer)
            answer = await send(s, "/api/x", bearer(issuer.token()))
            assert answer.status == want, kind
        finally:
            front.stop()
    assert upstream.seen == []


async def test_client_sent_claim_headers_never_reach_upstream(setup: Setup) -> None:
    s = setup
    forged = [("X-User-Id", "root"), ("X-User-Email", "root@example.com"), ("X-User-Roles", "admin"),
              ("X-Jwt-Payload", "e30"), ("x-user-roles", "admin2")]
    # A valid token without email or roles: the gateway sets X-User-Id and the payload only.
    answer = await send(s, "/api/x", [*bearer(s.issuer.token()).items(), *forged])
    assert answer.status == 200
    seen = seen_headers(s.upstream)
    assert seen["x-user-id"] == "alice"
    assert "x-user-email" not in seen and "x-user-roles" not in seen
    assert [v for k, v in s.upstream.seen[-1]["headers"] if k.lower() == "x-user-id"] == ["alice"]
    # Public and optional routes: no token, no claim headers, and none of the client's.
    for target in ("/public/x", "/optional/x"):
        answer = await send(s, target, forged)
        assert answer.status == 200, target
        assert not set(seen_headers(s.upstream)) & set(CLAIM_HEADERS), target


@pytest.mark.parametrize("target", [
    "/public/../admin/x", "/public/%2e%2e/admin/x", "/public/%2E%2E/admin/x", "/public/./../admin/x",
    "/public/x/../../admin/x", "/%61dmin/x",
])
async def test_path_confusion_is_never_allowed(setup: Setup, target: str) -> None:
    s = setup
    # A token without the admin scope: judged as /admin/x, refused, whatever the spelling.
    answer = await send(s, target, bearer(s.issuer.token()))
    assert answer.status == 403, (target, answer.status)
    answer = await send(s, target)
    assert answer.status == 401, (target, answer.status)
    assert s.upstream.seen == []


@pytest.mark.parametrize("target", [
    "/public//..//admin/x", "/public/..%2fadmin/x", "/public/%2e%2e%2fadmin/x", "/public/..;/admin/x",
    "/public/.%2e/admin/x", "/public/%2e./admin/x", "/public/..%5cadmin/x", "/public/..\\admin/x",
    "/public/%252e%252e/admin/x", "//admin/x", "/public/%00/../../admin/x",
])
async def test_odd_spellings_reach_upstream_only_under_their_own_policy(setup: Setup, target: str) -> None:
    s = setup
    # Proxies may spell a path differently from the gateway (Envoy resolves dot segments before
    # merging slashes); what matters: the path the upstream receives is the path that was judged.
    answer = await send(s, target, bearer(s.issuer.token()))
    if answer.status == 200:
        forwarded = s.upstream.seen[-1]["path"]
        assert not normalize_path(forwarded.partition("?")[0]).startswith("/admin"), (target, forwarded)
    else:
        assert answer.status in (400, 403, 404), (target, answer.status)
    assert all(not normalize_path(r["path"]).startswith("/admin") for r in s.upstream.seen)


async def test_client_forwarding_headers_cannot_redirect_the_decision(setup: Setup) -> None:
    s = setup
    lures = [("X-Original-URI", "/public/x"), ("X-Original-Method", "GET"), ("X-Original-URL", "http://a/public/x"),
             ("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-Method", "GET")]
    answer = await send(s, "/admin/x", lures)
    assert answer.status == 401
    answer = await send(s, "/admin/x", [*bearer(s.issuer.token()).items(), *lures])
    assert answer.status == 403
    assert s.upstream.seen == []


async def test_upstream_receives_the_normalized_path_that_was_judged(setup: Setup) -> None:
    s = setup
    answer = await send(s, "/public/./a//b/../c?q=1")
    assert answer.status == 200
    assert s.upstream.seen[-1]["path"] == "/public/a/c?q=1"
    answer = await send(s, "/api/x/../y", bearer(s.issuer.token()))
    assert answer.status == 200
    assert s.upstream.seen[-1]["path"] == "/api/y"


async def test_tokens_in_two_places_are_refused(setup: Setup) -> None:
    s = setup
    token = s.issuer.token()
    for headers in ([*bearer(token).items(), ("Cookie", f"access_token={token}")],
                    [("Cookie", f"access_token={token}")]):
        answer = await send(s, f"/api/x?access_token={token}" if len(headers) == 1 else "/api/x", headers)
        assert answer.status == nginx_or(s, 403, 400)
    assert s.upstream.seen == []
    answer = await send(s, "/api/x", [("Cookie", f"access_token={token}")])
    assert answer.status == 200 and seen_headers(s.upstream)["x-user-id"] == "alice"


@pytest.mark.parametrize("kind", ["nginx", "envoy"])
async def test_auto_dialect_behind_each_proxy_is_never_lured(
    kind: str, make_gateway: GatewayFactory, upstream: Upstream, issuer: Issuer, tmp_path: Path
) -> None:
    # Unpinned (auto): nginx passes a client's X-Forwarded-* to the check (two families: refused);
    # Envoy passes only the headers it is told to (none of these). Never allowed, never forwarded.
    gateway = await make_gateway(authz_config(dialect="auto"))
    front = await start_front(kind, tmp_path / kind, upstream.port, gateway.authz_port, free_port())
    try:
        s = Setup(front, gateway, upstream, issuer)
        lures = [("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-Method", "GET"), ("X-Forwarded-Host", "a"),
                 ("X-Original-URI", "/public/x"), ("X-Original-Method", "GET")]
        for headers in (lures, [*lures, *bearer(issuer.token()).items()], lures[:2], lures[3:]):
            answer = await send(s, "/admin/x", headers)
            assert answer.status in (401, 403), (kind, headers, answer.status)
        assert upstream.seen == []
        answer = await send(s, "/api/x", bearer(issuer.token()))
        assert answer.status == 200 and seen_headers(upstream)["x-user-id"] == "alice"
    finally:
        front.stop()
