"""The decision listener's `server` keys: authz_listen, authz_dialect, authz_path_prefix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.reader import At, Block, Reader, same_socket
from gateway.config.routes import path_problem

AUTHZ_DIALECTS = ("auto", "traefik", "nginx", "envoy")


def _read_authz(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    # Runs after the core server block: kw already holds listen and admin_listen when given.
    if "authz_listen" in m and (addr := r.listen(m["authz_listen"])) is not None:
        for other in ("listen", "admin_listen"):
            if other in kw and same_socket(addr, kw[other]):
                r.error(m["authz_listen"], f"must not share a port with {other} ({kw[other]})")
        kw["authz_listen"] = addr
    if "authz_dialect" in m and (dialect := r.choice(m["authz_dialect"], AUTHZ_DIALECTS)) is not None:
        kw["authz_dialect"] = dialect
    if "authz_path_prefix" in m and (prefix := r.string(m["authz_path_prefix"])) is not None:
        problem = path_problem(prefix)
        if problem is not None:
            r.error(m["authz_path_prefix"], problem)
        elif prefix.endswith("/"):
            r.error(m["authz_path_prefix"], f"{prefix!r}: write the prefix without a trailing '/' (it strips whole segments)")
        else:
            kw["authz_path_prefix"] = prefix


AUTHZ_BLOCK = Block(("authz_listen", "authz_dialect", "authz_path_prefix"), _read_authz)
