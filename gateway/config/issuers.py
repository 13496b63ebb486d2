"""The `issuers` section: who may sign tokens, with which algorithms, audiences and time limits, and their keys.

An issuer is a mapping made of blocks: the claim policy here, then its keys
(`jwks` in jwks.py, `secret` in secret.py); a new per-issuer feature is one
more module and one more entry in ISSUER_BLOCKS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.decryption import REQUIRE_ENCRYPTION
from gateway.config.dpop import ISSUER_DPOP_BLOCK
from gateway.config.jwks import JWKS_SOURCES, parse_jwks
from gateway.config.model import IssuerConfig
from gateway.config.reader import LABEL, At, Block, Reader, block_keys, child_path, names, suggest
from gateway.config.secret import read_secret
from gateway.config.yaml_lines import MarkedMap, MarkedSeq

SUPPORTED_ALGORITHMS: tuple[str, ...] = (
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA", "Ed25519", "Ed448",
)
# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
HS_MIN_SECRET_BYTES: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}


def _read_policy(r: Reader, _at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    # name and issuer are checked (and made unique) by parse_issuers; here they are only carried.
    for key in ("name", "issuer"):
        if key in m:
            kw[key] = m[key].value
    if "algorithms" in m and (algorithms := _algorithms(r, m["algorithms"])) is not None:
        kw["algorithms"] = algorithms
    if "audiences" in m and (auds := r.strings(m["audiences"], what="audience")) is not None:
        kw["audiences"] = auds
    if "clock_skew" in m and (skew := r.duration(m["clock_skew"], allow_zero=True)) is not None:
        kw["clock_skew"] = skew
    if "require_expiration" in m and (req := r.boolean(m["require_expiration"])) is not None:
        kw["require_expiration"] = req
    if "max_lifetime" in m and (life := r.duration(m["max_lifetime"])) is not None:
        kw["max_lifetime"] = life
    if "typ" in m and (typ := r.strings(m["typ"], what="typ value", fold=_fold_typ)) is not None:
        kw["typ"] = typ


def _read_keys(r: Reader, at: At, m: Mapping[str, At], kw: dict[str, Any]) -> None:
    """jwks for the asymmetric algorithms, secret for HS*: each present exactly when needed."""
    algorithms: tuple[str, ...] | None = kw.get("algorithms")
    hs = [a for a in algorithms or () if a in HS_MIN_SECRET_BYTES]
    keyed = [a for a in algorithms or () if a not in HS_MIN_SECRET_BYTES]
    if "jwks" in m:
        if algorithms is not None and not keyed:
            r.error(
                m["jwks"],
                f"is never used: {', '.join(hs)} verify with the secret only, never with keys from a JWK Set",
            )
        kw["jwks"] = parse_jwks(r, m["jwks"])
    elif keyed:
        r.error_at(
            child_path(at.path, "jwks"), at.line,
            f"missing: {', '.join(keyed)} need public keys; add jwks with one of {names(JWKS_SOURCES)}",
        )
    if "secret" in m:
        if algorithms is not None and not hs:
            r.error(m["secret"], "is used only by HS256/HS384/HS512, and algorithms lists none of them")
            read_secret(r, m["secret"], 0)  # still report how it is given
        else:
            kw["secret"] = read_secret(r, m["secret"], max((HS_MIN_SECRET_BYTES[a] for a in hs), default=0))
    elif hs:
        r.error_at(
            child_path(at.path, "secret"), at.line,
            f"missing: {', '.join(hs)} need a shared secret: secret: {{env: VAR}} or {{file: PATH}}",
        )


# The keys of one issuer, one block per feature (a new feature adds its module's block here).
ISSUER_BLOCKS: tuple[Block, ...] = (
    Block(
        ("name", "issuer", "audiences", "algorithms", "clock_skew", "require_expiration", "max_lifetime", "typ"),
        _read_policy,
    ),
    Block(("jwks", "secret"), _read_keys),
    REQUIRE_ENCRYPTION,
    ISSUER_DPOP_BLOCK,
)


def parse_issuers(r: Reader, at: At) -> tuple[IssuerConfig, ...] | None:
    items = r.seq(at, nonempty=False)
    if items is None:
        return None
    out: list[IssuerConfig] = []
    seen_names: dict[str, int | None] = {}
    seen_iss: dict[str, int | None] = {}
    for item in items:
        m = r.mapping(item, block_keys(ISSUER_BLOCKS), required=("name", "issuer", "algorithms"))
        if m is None:
            continue
        if "name" in m:
            r.label(m["name"], seen_names, what="issuer name")
        if "issuer" in m and (iss := r.string(m["issuer"])) is not None:
            if iss in seen_iss:
                r.error(
                    m["issuer"], f"issuer {iss!r} is configured twice (first on line {seen_iss[iss]}): a token's iss must pick one"
                )
            else:
                seen_iss[iss] = m["issuer"].line
        before = len(r.issues)
        kw = r.fill(item, m, ISSUER_BLOCKS)
        if len(r.issues) == before and {"name", "issuer", "algorithms"} <= kw.keys():
            out.append(IssuerConfig(**kw))
    return tuple(out)


def declared_issuer_names(at: At | None) -> dict[str, int | None] | None:
    """The well-formed issuer names the document declares (even of issuers with other errors), with their lines,
    for routes to refer to; None when the section is unusable, so routes do not pile on errors."""
    if at is None:
        return {}
    if not isinstance(at.value, MarkedSeq):
        return None
    declared: dict[str, int | None] = {}
    for item in at.value:
        if isinstance(item, MarkedMap) and isinstance(name := item.get("name"), str):
            if LABEL.fullmatch(name) is not None and name not in declared:
                declared[name] = item.value_lines["name"]
    return declared


def _algorithms(r: Reader, at: At) -> tuple[str, ...] | None:
    def check(item: At, alg: str) -> bool:
        if alg.lower() == "none":
            r.error(
                item,
                "'none' is never allowed: an unsigned token proves nothing "
                "(RFC 8725 §3.1, §2.1); list only signature algorithms",
            )
            return False
        if alg not in SUPPORTED_ALGORITHMS:
            hint = suggest(alg, SUPPORTED_ALGORITHMS)
            r.error(item, f"unknown algorithm {alg!r}{hint} (supported: {names(SUPPORTED_ALGORITHMS)})")
            return False
        return True

    return r.strings(at, what="algorithm", check=check)


def _fold_typ(value: str) -> str:
    low = value.lower()
    return low[len("application/") :] if low.startswith("application/") else low
