"""The `forward` section: which verified claims become upstream request headers, and what else goes along."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.config.model import DEFAULT_TOKEN_SOURCES, ForwardConfig, TokenSource
from gateway.config.reader import At, Block, Reader, claim_path_ok
from gateway.config.values import header_reserved, is_token

_FORWARD_KEYS = ("claims_to_headers", "payload_header", "keep_authorization")


def _read(r: Reader, _at: At, found: Mapping[str, At], fields: dict[str, Any]) -> None:
    if "forward" not in found:
        return
    forward = parse_forward(r, found["forward"], fields.get("tokens", DEFAULT_TOKEN_SOURCES))
    if forward is not None:
        fields["forward"] = forward


# The document's `forward` block: reads the token sources the `tokens` block left in the fields.
FORWARD_SECTION = Block(("forward",), _read)


def parse_forward(r: Reader, at: At, tokens: Sequence[TokenSource]) -> ForwardConfig | None:
    m = r.mapping(at, _FORWARD_KEYS)
    if m is None:
        return None
    kw: dict[str, Any] = {}
    token_headers = {t.name.lower(): t.name for t in tokens if t.location == "header"}
    used: dict[str, int | None] = {}

    def header(item: At) -> str | None:
        name = r.string(item)
        if name is None:
            return None
        if not is_token(name):
            r.error(item, f"{name!r} is not a valid header name (RFC 9110 token characters)")
            return None
        low = name.lower()
        if header_reserved(name):
            r.error(item, f"{name} is reserved (hop-by-hop, framing, credentials or set by the gateway)")
            return None
        if low in token_headers:
            r.error(item, f"{name} is where tokens are read (tokens): it is stripped from every request")
            return None
        if low in used:
            r.error(item, f"header {name} is already used on line {used[low]} (names compare case-insensitively)")
            return None
        used[low] = item.line
        return name

    if "claims_to_headers" in m:
        pairs: list[tuple[str, str]] = []
        entries = r.entries(m["claims_to_headers"], nonempty=False)
        for claim, _key_line, item in entries or ():
            if not claim_path_ok(claim):
                r.error(item, f"claim path {claim!r} has an empty segment")
                continue
            if (name := header(item)) is not None:
                pairs.append((claim, name))
        kw["claims_to_headers"] = tuple(pairs)
    if "payload_header" in m and (name := header(m["payload_header"])) is not None:
        kw["payload_header"] = name
    if "keep_authorization" in m and (keep := r.boolean(m["keep_authorization"])) is not None:
        kw["keep_authorization"] = keep
    return ForwardConfig(**kw)
