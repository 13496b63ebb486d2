"""Prometheus metrics: one registry, every SPEC metric, label children bound once."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import __version__

# 10µs .. ~1s: verification of a cached token is tens of µs, an RSA-4096 verify a few ms.
VERIFY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
REQUEST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# `_created` series double the exposition and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class RouteChildren:
    """Label children of one (route, status): looked up once, then reused by every request."""

    requests: Callable[[float], None]  # the requests counter child's increment (see _adder)
    duration: Any
    upstream: Any


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Observer:
    """One histogram child's observe without prometheus_client's per-call checks and bucket scan:
    a bisect and two increments (this runs two or three times per request)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._bounds = list(child._upper_bounds)  # ends with +Inf, so every amount has a bucket
        self._buckets = child._buckets
        self._sum = child._sum

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)  # the first bound >= amount, as upstream's scan


def _bound(
    children: dict[tuple[str, str], Any], metric: Any, first: str, second: str, wrap: Any = None
) -> Any:
    """A label child looked up once, then reused: `labels()` costs a lock and a tuple per call."""
    key = (first, second)
    child = children.get(key)
    if child is None:
        child = metric.labels(first, second)
        child = children[key] = child if wrap is None else wrap(child)
    return child


def _adder(child: Any) -> Callable[[float], None]:
    """A counter or gauge child's increment straight on its value: prometheus_client's inc() and
    dec() check, on every call, what holds by construction here (a bound child, a known amount).
    Gauges add a negative amount to decrease, as Gauge.dec does."""
    add: Callable[[float], None] = child._value.inc
    return add


class _LoopValue(values.MutexValue):
    """A metric value without a lock: a gateway process updates and scrapes its metrics
    from its one event-loop thread, so the lock prometheus_client takes per update buys nothing."""

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def get(self) -> float:
        value: float = self._value
        return value


if MULTIPROC_ENV not in os.environ:
    values.ValueClass = _LoopValue


def use_multiprocess_values(directory: str) -> None:
    """Call in each worker before building Metrics: values go to files every worker's scrape sums."""
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class Metrics:
    """All gateway metrics in a private registry (tests build as many as they like).

    With several workers (use_multiprocess_values), each process writes its values to
    the shared directory and a scrape of any worker reads them all.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        multiproc_dir = os.environ.get(MULTIPROC_ENV)
        self._scrape_registry = r
        if multiproc_dir:
            self._scrape_registry = CollectorRegistry()
            MultiProcessCollector(self._scrape_registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        # A gauge, not an Info: Info has no multiprocess mode.
        self.build_info = Gauge(
            "gateway_build_info", "Gateway build information.", ["version"], registry=r, multiprocess_mode="max"
        )
        self.build_info.labels(__version__).set(1)
        self.jwt_verify_seconds = Histogram(
            "gateway_jwt_verify_seconds",
            "Time to authenticate a token (cache lookup, parse, signature, claims), by issuer and result.",
            ["issuer", "result"], buckets=VERIFY_BUCKETS, registry=r,
        )
        self.jwt_cache_lookups = Counter(
            "gateway_jwt_cache_lookups", "Verified-token cache lookups by result (hit/miss).",
            ["result"], registry=r,
        )
        self.requests = Counter(
            "gateway_requests", "Requests handled, by listener (proxy/authz), route and HTTP status code.",
            ["listener", "route", "code"], registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time from request start to response end, by listener and route.",
            ["listener", "route"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Time until the upstream's response headers, by route.",
            ["route"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.jwks_refresh = Counter(
            "gateway_jwks_refresh", "Key set fetches by issuer and result.",
            ["issuer", "result"], registry=r,
        )
        self.jwks_keys = Gauge(
            "gateway_jwks_keys", "Usable verification keys held, by issuer.", ["issuer"], registry=r,
            multiprocess_mode="livemax",
        )
        self.config_reloads = Counter(
            "gateway_config_reloads", "Config reload attempts by result (ok/error).", ["result"], registry=r,
        )
        self.dpop_checks = Counter(
            "gateway_dpop_checks", "DPoP binding checks (RFC 9449) by issuer and result: ok or the refusal.",
            ["issuer", "result"], registry=r,
        )
        self.tls_reloads = Counter(
            "gateway_tls_reloads", "Reloads of the proxy port's TLS certificate files by result (ok/error).",
            ["result"], registry=r,
        )
        self.tls_certificate_expiry = Gauge(
            "gateway_tls_certificate_expiry_timestamp_seconds",
            "When the proxy port's serving certificate expires (Unix time; 0 without TLS).",
            registry=r, multiprocess_mode="livemin",
        )
        self.inflight = Gauge(
            "gateway_inflight_requests", "Requests in progress.", registry=r, multiprocess_mode="livesum"
        )
        self.open_connections = Gauge(
            "gateway_open_connections", "Client connections open on the proxy port.", registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_rejected = Counter(
            "gateway_connections_rejected",
            "Client connections (or HTTP/2 streams) refused or closed by a limit"
            " (max_connections, header_timeout, idle_timeout, send_timeout, body_timeout).",
            ["reason"], registry=r,
        )
        self.requests_shed = Counter(
            "gateway_requests_shed", "Requests answered 503 at once because server.max_inflight were in progress.",
            registry=r,
        )
        self.http2_errors = Counter(
            "gateway_http2_errors",
            "HTTP/2 connections ended for a protocol error or a denial-of-service shape (rapid_reset, "
            "continuation_flood, settings_flood, ping_flood, header_list_size, protocol_error).",
            ["reason"], registry=r,
        )
        self._route_children: dict[tuple[str, str, int], RouteChildren] = {}
        self._verify_children: dict[tuple[str, str], Any] = {}
        self._dpop_children: dict[tuple[str, str], Any] = {}
        self.cache_hit = self.jwt_cache_lookups.labels("hit")
        self.cache_miss = self.jwt_cache_lookups.labels("miss")
        # The per-request counts, through _adder.
        self.count_cache_hit = _adder(self.cache_hit)
        self.count_cache_miss = _adder(self.cache_miss)
        self.add_inflight = _adder(self.inflight)
        for result in ("ok", "error"):
            self.config_reloads.labels(result)
            self.tls_reloads.labels(result)

    def route_children(self, listener: str, route: str, status: int) -> RouteChildren:
        # Listeners and routes come from config and statuses from a small set, so this map stays small.
        key = (listener, route, status)
        children = self._route_children.get(key)
        if children is None:
            children = RouteChildren(
                _adder(self.requests.labels(listener, route, str(status))),
                _Observer(self.request_duration.labels(listener, route)),
                _Observer(self.upstream_duration.labels(route)),
            )
            self._route_children[key] = children
        return children

    def verify_histogram(self, issuer: str, result: str) -> Any:
        """The verification histogram's child for (issuer, result); both come from closed sets."""
        return _bound(self._verify_children, self.jwt_verify_seconds, issuer, result, _Observer)

    def dpop_check(self, issuer: str, result: str) -> Any:
        """The DPoP counter's child for (issuer, result); both come from closed sets."""
        return _bound(self._dpop_children, self.dpop_checks, issuer, result)

    def exposition(self) -> bytes:
        return generate_latest(self._scrape_registry)

    # The TLS files' TlsEvents.
    def tls_reload(self, result: str) -> None:
        self.tls_reloads.labels(result).inc()

    def tls_certificate(self, not_after: float) -> None:
        self.tls_certificate_expiry.set(not_after)

    # The key store's KeyEventSink.
    def refresh(self, issuer: str, result: str) -> None:
        self.jwks_refresh.labels(issuer, result).inc()

    def keys_loaded(self, issuer: str, count: int) -> None:
        self.jwks_keys.labels(issuer).set(count)

    def key_skipped(self, issuer: str, message: str) -> None:
        """No metric: the key store logs each skipped key itself."""
