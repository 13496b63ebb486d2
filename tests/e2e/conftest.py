"""End-to-end fixtures: the proxy tests' issuer, echo upstream and gateway, plus a real front proxy."""

from __future__ import annotations

from tests.proxy.conftest import http, issuer, make_gateway, upstream

__all__ = ["http", "issuer", "make_gateway", "upstream"]
