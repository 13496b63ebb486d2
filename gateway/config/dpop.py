"""DPoP keys (RFC 9449): `issuers[].dpop`, and `server.public_origin` / `server.trusted_proxies` for `htu`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.model import DpopConfig
from gateway.config.reader import At, Block, Reader, names
from gateway.jose.dpop import ASYMMETRIC, origin_of

_DPOP_KEYS = ("mode", "algorithms", "max_age", "nonce")
_DPOP_MODES = ("off", "optional", "required")


def _read_origin(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "public_origin" in m and (origin := _public_origin(r, m["public_origin"])) is not None:
        kw["public_origin"] = origin
    if "trusted_proxies" in m and (cidrs := r.networks(m["trusted_proxies"])) is not None:
        kw["trusted_proxies"] = cidrs


def _public_origin(r: Reader, at: At) -> tuple[str, str] | None:
    text = r.string(at)
    if text is None:
        return None
    scheme, sep, authority = text.partition("://")
    origin = origin_of(scheme, authority) if sep and authority and scheme.lower() in ("http", "https") else None
    if origin is None:
        r.error(at, f"{text!r} is not an origin: write scheme://host[:port], e.g. \"https://api.example.com\"")
    return origin


def _read_dpop(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    if "dpop" in m and (dpop := _parse_dpop(r, m["dpop"])) is not None:
        kw["dpop"] = dpop


def _parse_dpop(r: Reader, at: At) -> DpopConfig | None:
    m = r.mapping(at, _DPOP_KEYS)
    if m is None:
        return None
    before = len(r.issues)
    kw: dict[str, Any] = {}
    if "mode" in m:
        if m["mode"].value is False:  # YAML 1.1 reads a bare `off` as false
            kw["mode"] = "off"
        elif (mode := r.choice(m["mode"], _DPOP_MODES)) is not None:
            kw["mode"] = mode

    def asymmetric(item: At, alg: str) -> bool:
        if alg not in ASYMMETRIC:
            r.error(item, f"{alg!r} cannot sign a DPoP proof: asymmetric algorithms only ({names(sorted(ASYMMETRIC))})")
            return False
        return True

    if "algorithms" in m and (algs := r.strings(m["algorithms"], what="algorithm", check=asymmetric)) is not None:
        kw["algorithms"] = algs
    if "max_age" in m and (age := r.duration(m["max_age"])) is not None:
        kw["max_age"] = age
    if "nonce" in m and (nonce := r.boolean(m["nonce"])) is not None:
        kw["nonce"] = nonce
    return DpopConfig(**kw) if len(r.issues) == before else None


SERVER_DPOP_BLOCK = Block(("public_origin", "trusted_proxies"), _read_origin)
ISSUER_DPOP_BLOCK = Block(("dpop",), _read_dpop)
