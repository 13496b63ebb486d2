"""Decision mode in-process: the authz listener of a real gateway, asked the way Traefik, nginx and Envoy ask.

Checks are sent directly with each proxy's headers (Traefik is not packaged here; the
nginx and Envoy end-to-end tests live in tests/e2e and run under `make check-decision`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import aiohttp
import pytest

from gateway.server import GatewayProcess
from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.harness import Issuer, Upstream, raw_request, wait_for

CLAIM_HEADERS = ("X-User-Id", "X-User-Email", "X-User-Roles", "X-Jwt-Payload")


def authz_config(dialect: str = "auto", prefix: str = "/authz") -> str:
    return BASE_CONFIG.replace(
        "server:\n",
        f'server:\n  authz_listen: "127.0.0.1:0"\n  authz_dialect: {dialect}\n  authz_path_prefix: {prefix}\n',
        1,
    )


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> GatewayProcess:
    return await make_gateway(authz_config())


def authz_url(process: GatewayProcess, path: str = "/check") -> str:
    return f"http://127.0.0.1:{process.authz_port}{path}"


def traefik(method: str, uri: str, host: str = "app.example", **extra: str) -> dict[str, str]:
    return {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "X-Forwarded-Host": host,
            "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", **extra}


def nginx(method: str, uri: str, **extra: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri, **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ask(
    http: aiohttp.ClientSession, process: GatewayProcess, headers: Mapping[str, str] | list[tuple[str, str]],
    path: str = "/check", method: str = "GET",
) -> tuple[int, Mapping[str, str], bytes]:
    async with http.request(method, authz_url(process, path), headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


# --- allowed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["traefik", "nginx", "ingress-nginx", "envoy"])
async def test_allowed_is_exactly_200_empty_with_claim_headers(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, upstream: Upstream, family: str
) -> None:
    token = issuer.token(email="alice@example.com", realm_access={"roles": ["a", "b"]})
    headers = {**bearer(token), "X-Request-Id": "check-1"}
    path = "/check"
    if family == "traefik":
        headers |= traefik("POST", "/api/orders?x=1")
    elif family == "nginx":
        headers |= nginx("POST", "/api/orders?x=1")
    elif family == "ingress-nginx":
        headers |= {"X-Original-Method": "POST", "X-Original-URL": "https://app.example/api/orders?x=1"}
    else:
        path = "/authz/api/orders?x=1"
    status, got, body = await ask(http, gateway, headers, path=path, method="POST" if family == "envoy" else "GET")
    assert (status, body) == (200, b"")
    assert got["X-User-Id"] == "alice"
    assert got["X-User-Email"] == "alice@example.com"
    assert got["X-User-Roles"] == "a,b"
    assert json.loads(_b64(got["X-Jwt-Payload"]))["sub"] == "alice"
    assert got["X-Request-Id"] == "check-1"
    assert got["Server"] == "gateway"
    assert "WWW-Authenticate" not in got
    assert upstream.seen == []  # nothing is forwarded
    assert "x-envoy-auth-headers-to-remove" not in got  # every claim header is set: nothing to strip


async def test_envoy_answer_names_the_claim_headers_it_does_not_set(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    # Envoy copies only what the answer carries: the rest must be removed from the client's request.
    status, got, _ = await ask(http, gateway, bearer(issuer.token()), path="/authz/api/x")
    assert status == 200 and got["X-User-Id"] == "alice"
    assert set(got["x-envoy-auth-headers-to-remove"].split(",")) == {"x-user-email", "x-user-roles"}
    status, got, _ = await ask(http, gateway, {}, path="/authz/public/x")
    assert status == 200
    assert set(got["x-envoy-auth-headers-to-remove"].split(",")) == {h.lower() for h in CLAIM_HEADERS}


async def test_client_sent_claim_headers_never_come_back(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    forged = {"X-User-Id": "root", "X-User-Roles": "admin"}
    status, got, _ = await ask(http, gateway, {**traefik("GET", "/api/x"), **bearer(issuer.token()), **forged})
    assert status == 200 and got["X-User-Id"] == "alice" and "X-User-Roles" not in got
    status, got, _ = await ask(http, gateway, {**traefik("GET", "/public/x"), **forged})
    assert status == 200 and not any(h in got for h in CLAIM_HEADERS)
    status, got, _ = await ask(http, gateway, {**traefik("GET", "/api/x"), **forged})
    assert status == 401 and not any(h in got for h in CLAIM_HEADERS)


async def test_public_and_optional_routes(gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    status, got, _ = await ask(http, gateway, traefik("GET", "/public/x"))
    assert status == 200 and "X-User-Id" not in got
    # A public route looks at no token, not even a broken one.
    status, _, _ = await ask(http, gateway, {**traefik("GET", "/public/x"), **bearer("a.b.c")})
    assert status == 200
    status, got, _ = await ask(http, gateway, traefik("GET", "/optional/x"))
    assert status == 200 and "X-User-Id" not in got
    status, got, _ = await ask(http, gateway, {**traefik("GET", "/optional/x"), **bearer(issuer.token())})
    assert status == 200 and got["X-User-Id"] == "alice"
    status, _, _ = await ask(http, gateway, {**traefik("GET", "/optional/x"), **bearer("a.b.c")})
    assert status == 401


async def test_query_token_comes_from_the_conveyed_uri(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    token = issuer.token()
    status, got, _ = await ask(http, gateway, traefik("GET", f"/api/x?access_token={token}"))
    assert status == 200 and got["X-User-Id"] == "alice"
    # The check request's own query is not the original request's.
    status, _, _ = await ask(http, gateway, traefik("GET", "/api/x"), path=f"/check?access_token={token}")
    assert status == 401


# --- refused: the proxy port's answers, nginx's mapping ---------------------------------------


@pytest.mark.parametrize("family", ["traefik", "nginx", "envoy"])
async def test_refusals_carry_the_proxy_ports_status_challenge_and_body(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, family: str
) -> None:
    def conveyed(uri: str, **headers: str) -> tuple[dict[str, str], str]:
        if family == "traefik":
            return traefik("GET", uri) | headers, "/check"
        if family == "nginx":
            return nginx("GET", uri) | headers, "/check"
        return dict(headers), "/authz" + uri

    nginx_family = family == "nginx"
    cases: list[tuple[str, dict[str, str], int, str | None]] = [
        ("/api/x", {}, 401, 'Bearer realm="gateway"'),
        ("/api/x", bearer("a.b.c"), 401, "invalid_token"),
        ("/api/x", bearer(issuer.token(exp=1)), 401, "the token has expired"),
        ("/admin/x", bearer(issuer.token()), 403, "insufficient_scope"),
        (f"/api/x?access_token={issuer.token()}", bearer(issuer.token()), 403 if nginx_family else 400, "invalid_request"),
        ("/nowhere", {}, 403 if nginx_family else 404, None),
        ("/api/%2Fx", {}, 403 if nginx_family else 400, None),
    ]
    for uri, extra, want, challenge in cases:
        headers, path = conveyed(uri, **extra, **{"X-Request-Id": "r-1"})
        status, got, body = await ask(http, gateway, headers, path=path)
        assert status == want, (uri, status)
        if challenge is None:
            assert "WWW-Authenticate" not in got
        else:
            assert challenge in got["WWW-Authenticate"], uri
        document = json.loads(body)
        assert document["request_id"] == "r-1" and document["error"] and document["error_description"]
        assert got["Content-Type"] == "application/json"
        assert not any(h in got for h in CLAIM_HEADERS)


async def test_keys_unavailable_is_503_in_every_family(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    issuer.failing = True
    process = await make_gateway(authz_config(), wait_keys=False)
    async with http.get(admin_url(process, "/readyz")) as resp:
        assert resp.status == 503  # readiness covers both ports: no keys, not ready
    for headers in (traefik("GET", "/api/x"), nginx("GET", "/api/x")):
        status, got, _ = await ask(http, process, {**headers, **bearer(issuer.token())})
        assert status == 503 and got["Retry-After"]  # nginx turns it into 500: still closed


# --- what is judged: the conveyed request, normalized like the proxy port's ------------------


@pytest.mark.parametrize("uri", ["/public/../admin/x", "/public/%2e%2e/admin/x", "/public//..//admin/x", "/%61dmin/x"])
async def test_conveyed_uri_is_normalized_before_routing(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer, uri: str
) -> None:
    # Judged as /admin/x: without the admin scope, never allowed.
    for headers in (traefik("GET", uri), nginx("GET", uri)):
        status, _, _ = await ask(http, gateway, {**headers, **bearer(issuer.token())})
        assert status == 403
    status, _ = await raw_request(
        gateway.authz_port,
        f"GET /authz{uri} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {issuer.token()}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 403
    status, _, _ = await ask(http, gateway, {**traefik("GET", uri), **bearer(issuer.token(scope="admin"))})
    assert status == 200


@pytest.mark.parametrize("uri", ["/public/..%2fadmin", "/public/%00", "/public;x/../admin", "/public/\\..\\admin"])
async def test_unsafe_conveyed_uri_is_refused(gateway: GatewayProcess, http: aiohttp.ClientSession, uri: str) -> None:
    status, _, body = await ask(http, gateway, traefik("GET", uri))
    assert status == 400 and json.loads(body)["error"] == "invalid_path"
    status, _, _ = await ask(http, gateway, nginx("GET", uri))
    assert status == 403


async def test_conveyed_method_and_host_route(make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer) -> None:
    text = authz_config().replace(
        "routes:\n",
        "routes:\n  - name: reports-host\n    match: {{prefix: /reports, host: reports.example, methods: [GET]}}\n"
        "    auth: public\n",
        1,
    )
    process = await make_gateway(text)
    status, _, _ = await ask(http, process, traefik("GET", "/reports/q", host="reports.example:443"))
    assert status == 200
    status, _, _ = await ask(http, process, traefik("POST", "/reports/q", host="reports.example"))
    assert status == 404  # the POST matches no route
    status, _, _ = await ask(http, process, traefik("GET", "/reports/q", host="other.example"))
    assert status == 404
    # nginx: host from X-Original-URL, else the check's own Host (nginx passes $host).
    url_headers = {"X-Original-Method": "GET", "X-Original-URL": "http://reports.example/reports/q"}
    status, _, _ = await ask(http, process, url_headers)
    assert status == 200
    status, _, _ = await ask(http, process, {**nginx("GET", "/reports/q"), "Host": "reports.example"})
    assert status == 200
    # envoy: the check's own method, path and Host.
    status, _, _ = await ask(http, process, {"Host": "reports.example"}, path="/authz/reports/q")
    assert status == 200
    status, _, _ = await ask(http, process, {"Host": "reports.example"}, path="/authz/reports/q", method="DELETE")
    assert status == 404


# --- ambiguity is refused, never guessed ------------------------------------------------------

AMBIGUOUS: list[tuple[str, list[tuple[str, str]], int]] = [
    ("mixed families", [*traefik("GET", "/public/x").items(), *nginx("GET", "/public/x").items()], 403),
    ("mixed, one marker each", [("X-Forwarded-Uri", "/public/x"), ("X-Original-Method", "GET")], 403),
    ("traefik method only", [("X-Forwarded-Method", "GET")], 400),
    ("traefik uri only", [("X-Forwarded-Uri", "/public/x")], 400),
    ("nginx uri only", [("X-Original-URI", "/public/x")], 403),
    ("nginx method only", [("X-Original-Method", "GET")], 403),
    ("traefik uri repeated", [*traefik("GET", "/public/x").items(), ("X-Forwarded-Uri", "/admin")], 400),
    ("traefik method repeated", [*traefik("GET", "/public/x").items(), ("X-Forwarded-Method", "POST")], 400),
    ("traefik host repeated", [*traefik("GET", "/public/x").items(), ("X-Forwarded-Host", "b.example")], 400),
    ("traefik host list", [*traefik("GET", "/public/x", host="a.example, b.example").items()], 400),
    ("nginx uri repeated", [*nginx("GET", "/public/x").items(), ("X-Original-URI", "/admin")], 403),
    ("absolute uri", [*traefik("GET", "http://evil.example/public/x").items()], 400),
    ("asterisk", [*traefik("OPTIONS", "*").items()], 400),
    ("scheme-relative", [*traefik("GET", "//evil.example/public/x").items()], 400),
    ("empty uri", [*traefik("GET", "").items()], 400),
    ("bad method", [*traefik("GE T", "/public/x").items()], 400),
    ("url and uri disagree", [*nginx("GET", "/public/x").items(), ("X-Original-URL", "http://a.example/admin")], 403),
    ("url not absolute", [("X-Original-Method", "GET"), ("X-Original-URL", "/public/x")], 403),
    ("url bad scheme", [("X-Original-Method", "GET"), ("X-Original-URL", "ftp://a.example/public/x")], 403),
    ("url with userinfo", [("X-Original-Method", "GET"), ("X-Original-URL", "http://a.example@b.example/public/x")], 403),
    ("url with fragment", [("X-Original-Method", "GET"), ("X-Original-URL", "http://a.example/public/x#f")], 403),
]


@pytest.mark.parametrize("headers,want", [(h, w) for _, h, w in AMBIGUOUS], ids=[n for n, _, _ in AMBIGUOUS])
async def test_ambiguous_checks_are_refused(
    gateway: GatewayProcess, http: aiohttp.ClientSession, headers: list[tuple[str, str]], want: int
) -> None:
    # Every case would be allowed if read one way (/public/x is public): refusing is the only safe answer.
    status, got, body = await ask(http, gateway, headers)
    assert status == want
    assert json.loads(body)["error"] == "invalid_request"
    assert not any(h in got for h in CLAIM_HEADERS)


async def test_url_and_uri_that_agree_are_one_request(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    headers = {**nginx("GET", "/public/x?a=1"), "X-Original-URL": "https://app.example/public/x?a=1"}
    status, _, _ = await ask(http, gateway, headers)
    assert status == 200


async def test_envoy_path_outside_the_prefix_is_404(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    for path in ("/public/x", "/authzpublic/x", "/authz"):
        status, _, body = await ask(http, gateway, {}, path=path)
        assert status == 404 and json.loads(body)["error"] == "not_found", path
    status, _, _ = await ask(http, gateway, {}, path="/authz/public/x")
    assert status == 200


@pytest.mark.parametrize("dialect", ["traefik", "nginx", "envoy"])
async def test_pinned_dialect_ignores_other_families(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, dialect: str
) -> None:
    process = await make_gateway(authz_config(dialect))
    # A client adds another family's headers pointing at a public path; the real check names /api/x.
    lure_t = traefik("GET", "/public/x")
    lure_n = nginx("GET", "/public/x")
    if dialect == "traefik":
        headers, path = {**traefik("GET", "/api/x"), **lure_n}, "/check"
    elif dialect == "nginx":
        headers, path = {**nginx("GET", "/api/x"), "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"}, "/check"
    else:
        headers, path = {**lure_t, **lure_n}, "/authz/api/x"
    status, _, _ = await ask(http, process, headers, path=path)
    assert status == 401
    # Its own family missing or partial is refused.
    partial = {"traefik": {"X-Forwarded-Uri": "/public/x"}, "nginx": {"X-Original-URI": "/public/x"}, "envoy": {}}
    status, _, _ = await ask(http, process, partial[dialect], path="/check")
    assert status == (404 if dialect == "envoy" else 403 if dialect == "nginx" else 400)


# --- the proxy port does not trust forwarding headers ----------------------------------------


async def test_proxy_port_ignores_conveyed_uris_for_routing(
    gateway: GatewayProcess, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    lures = {**traefik("GET", "/public/x"), **nginx("GET", "/public/x"), "X-Original-URL": "http://a/public/x"}
    async with http.get(url(gateway, "/api/x"), headers=lures) as resp:
        assert resp.status == 401  # routed by its own path, not the headers
    async with http.get(url(gateway, "/public/y"), headers={**nginx("GET", "/admin/x"), "X-Forwarded-Uri": "/admin"}) as resp:
        assert resp.status == 200
    assert upstream.seen[-1]["path"] == "/public/y"
    # Not even mixed or repeated families matter there: they are ordinary headers.
    headers = [("X-Forwarded-Uri", "/a"), ("X-Forwarded-Uri", "/b")]
    async with http.get(url(gateway, "/public/z"), headers=headers) as resp:
        assert resp.status == 200


# --- metrics, log, reload, drain ---------------------------------------------------------------


async def test_metrics_and_access_log_name_the_listener(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    lines: list[str] = []
    gateway.access_log._stream = _Lines(lines)
    await ask(http, gateway, {**traefik("GET", "/api/x?q=hidden"), **bearer(issuer.token())})
    await ask(http, gateway, traefik("GET", "/api/x"))
    await ask(http, gateway, [("X-Forwarded-Uri", "/x")])
    async with http.get(url(gateway, "/api/x")) as resp:
        assert resp.status == 401
    gateway.access_log.flush()
    logged = [json.loads(line) for line in "".join(lines).splitlines()]
    assert [(e["listener"], e["status"], e["decision"]) for e in logged] == [
        ("authz", 200, "allow"), ("authz", 401, "no_token"), ("authz", 400, "ambiguous_check"), ("proxy", 401, "no_token"),
    ]
    assert logged[0]["path"] == "/api/x" and logged[0]["route"] == "api" and logged[0]["sub"] == "alice"
    assert logged[2]["reason"] == "partial_family"
    assert "hidden" not in "".join(lines)
    async with http.get(admin_url(gateway, "/metrics")) as resp:
        text = await resp.text()
    assert 'gateway_requests_total{code="200",listener="authz",route="api"} 1.0' in text
    assert 'gateway_requests_total{code="401",listener="authz",route="api"} 1.0' in text
    assert 'gateway_requests_total{code="401",listener="proxy",route="api"} 1.0' in text


async def test_reload_applies_to_the_authz_port(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    process = await make_gateway(authz_config())
    status, _, _ = await ask(http, process, traefik("GET", "/public/x"))
    assert status == 200
    assert process.config_path is not None
    with open(process.config_path) as f:
        text = f.read()
    with open(process.config_path, "w") as f:
        f.write(text.replace("authz_dialect: auto", "authz_dialect: nginx").replace("auth: public", "auth: required"))
    assert await process.reload()
    status, _, _ = await ask(http, process, nginx("GET", "/public/x"))
    assert status == 401  # the new route policy
    status, _, _ = await ask(http, process, traefik("GET", "/public/x"))
    assert status == 403  # the new dialect: no nginx headers is a partial family, mapped for nginx


async def test_drain_finishes_checks_in_flight_and_closes_the_port(
    gateway: GatewayProcess, http: aiohttp.ClientSession, issuer: Issuer
) -> None:
    port = gateway.authz_port
    await gateway.stop()
    assert gateway.gateway.draining
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{port}/check", headers=traefik("GET", "/public/x")) as resp:
            await resp.read()


async def test_authz_port_is_off_unless_configured(gateway: GatewayProcess, make_gateway: GatewayFactory) -> None:
    plain = await make_gateway()
    assert plain.authz_port == 0 and gateway.authz_port != 0


async def test_unparseable_check_is_counted_on_the_authz_listener(gateway: GatewayProcess) -> None:
    status, _ = await raw_request(gateway.authz_port, b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert status == 400
    await wait_for(lambda: 'listener="authz",route="no_route"' in gateway.metrics.exposition().decode())


class _Lines:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)

    def flush(self) -> None:
        pass


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_admin_config_shows_the_decision_keys(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(admin_url(gateway, "/config")) as resp:
        assert resp.status == 200
        server = (await resp.json())["config"]["server"]
    assert server["authz_dialect"] == "auto" and server["authz_path_prefix"] == "/authz"
    assert server["authz_listen"] == {"host": "127.0.0.1", "port": 0}  # as configured (0: any free port)
