"""Tests for gateway.routing: first-match routes over method, host and normalized path."""

from __future__ import annotations

import pytest

from gateway.authz import ClaimRules
from gateway.config.model import ClaimRule, RouteConfig, RouteMatch
from gateway.routing import Route, Router, host_key


def route(name: str, **match: object) -> RouteConfig:
    return RouteConfig(name=name, match=RouteMatch(**match))  # type: ignore[arg-type]


def name_of(router: Router, path: str, method: str = "GET", host: str | None = "svc") -> str | None:
    found = router.match(method, host, path)
    return None if found is None else found.name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/public", "public"),
        ("/public/", "public"),
        ("/public/x/y", "public"),
        ("/publicity", None),
        ("/public-x", None),
        ("/pub", None),
        ("/", None),
    ],
)
def test_prefix_matches_whole_segments(path: str, expected: str | None) -> None:
    assert name_of(Router([route("public", prefix="/public")]), path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/", "api"), ("/api/x", "api"), ("/api", None), ("/apix", None)],
)
def test_prefix_with_trailing_slash(path: str, expected: str | None) -> None:
    assert name_of(Router([route("api", prefix="/api/")]), path) == expected


def test_root_prefix_and_no_match_criteria_match_everything() -> None:
    for config in (route("all", prefix="/"), route("all")):
        router = Router([config])
        assert name_of(router, "/") == "all"
        assert name_of(router, "/anything/at/all") == "all"


def test_exact_path() -> None:
    router = Router([route("exact", path="/login")])
    assert name_of(router, "/login") == "exact"
    assert name_of(router, "/login/") is None
    assert name_of(router, "/login/x") is None


def test_regex_is_a_full_match() -> None:
    router = Router([route("rx", regex=r"/users/[0-9]+")])
    assert name_of(router, "/users/42") == "rx"
    assert name_of(router, "/users/42/delete") is None
    assert name_of(router, "/x/users/42") is None


def test_first_match_wins() -> None:
    router = Router(
        [
            route("admin", prefix="/admin", methods=("POST", "DELETE")),
            route("public", prefix="/public"),
            route("api", prefix="/"),
        ]
    )
    assert name_of(router, "/admin/x", "POST") == "admin"
    assert name_of(router, "/admin/x", "GET") == "api"
    assert name_of(router, "/public/x") == "public"
    assert name_of(router, "/other") == "api"


def test_methods_compare_upper_case_and_head_is_not_get() -> None:
    router = Router([route("get", methods=("GET",)), route("rest")])
    assert name_of(router, "/", "GET") == "get"
    assert name_of(router, "/", "get") == "get"
    assert name_of(router, "/", "HEAD") == "rest"
    assert name_of(router, "/", "POST") == "rest"
    router = Router([route("lower-config", methods=("post",))])
    assert name_of(router, "/", "POST") == "lower-config"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "h"),
        ("API.Example.COM", "h"),
        ("api.example.com:8443", "h"),
        ("api.example.com.", "h"),
        ("api.example.com.:80", "h"),
        ("other.example.com", "rest"),
        ("api.example.com.evil", "rest"),
        ("", "rest"),
        (None, "rest"),
    ],
)
def test_host(host: str | None, expected: str) -> None:
    router = Router([route("h", host="api.example.com"), route("rest")])
    assert name_of(router, "/", host=host) == expected


@pytest.mark.parametrize("configured", ["[::1]", "::1", "[::1]:8080"])
@pytest.mark.parametrize("sent", ["[::1]", "[::1]:8080", "::1"])
def test_host_ipv6(configured: str, sent: str) -> None:
    router = Router([route("v6", host=configured)])
    assert name_of(router, "/", host=sent) == "v6"
    assert name_of(router, "/", host="[::2]:8080") is None


def test_host_key() -> None:
    assert host_key("Example.COM:80") == "example.com"
    assert host_key("[2001:DB8::1]:443") == "2001:db8::1"
    assert host_key("2001:db8::1") == "2001:db8::1"
    assert host_key("10.0.0.1:8080") == "10.0.0.1"


def test_route_policy() -> None:
    config = RouteConfig(
        name="admin",
        match=RouteMatch(prefix="/admin"),
        auth="optional",
        issuers=("corp", "partner"),
        claims=(ClaimRule("scope", "contains", "admin"),),
    )
    found = Router([config, route("public")]).match("GET", None, "/admin")
    assert isinstance(found, Route)
    assert found.auth == "optional"
    assert found.issuer_names == frozenset({"corp", "partner"})
    assert isinstance(found.rules, ClaimRules)
    assert found.rules.first_failure({"scope": "admin"}) is None
    assert found.rules.first_failure({"scope": "user"}) == "scope"
    default = Router([route("api")]).match("GET", None, "/")
    assert default is not None and default.issuer_names is None and default.auth == "required"


def test_route_is_frozen() -> None:
    found = Router([route("api")]).match("GET", None, "/")
    assert found is not None
    with pytest.raises(AttributeError):
        found.name = "x"  # type: ignore[misc]


def test_empty_table_matches_nothing() -> None:
    assert Router([]).match("GET", "h", "/") is None
