"""curl against the gateway: the proxy tests' issuer, echo upstream and gateway."""

from __future__ import annotations

from tests.proxy.conftest import issuer, make_gateway, upstream

__all__ = ["issuer", "make_gateway", "upstream"]
