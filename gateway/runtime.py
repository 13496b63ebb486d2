"""Config -> immutable runtime: compiled routes, token extraction, issuers with their keys, header plans.

The request path only reads a Runtime; a reload builds a new one and swaps one reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.authn import IssuerRuntime, IssuerTable
from gateway.cert_binding import ClientCertificates
from gateway.claim_headers import ClaimHeaderPlan
from gateway.config.model import GatewayConfig
from gateway.decision import DecisionEdge
from gateway.dpop_binding import DpopBinder
from gateway.dpop_state import DpopShared
from gateway.extract import TokenExtractor
from gateway.forward import HeaderPlan, Upstream
from gateway.jose.claims import ClaimPolicy
from gateway.jose.verifier import VerifyPolicy
from gateway.routing import Router

if TYPE_CHECKING:
    from gateway.decryption_keys import DecryptionKeyStore
    from gateway.keystore import KeyStore


@dataclass(frozen=True, slots=True)
class Runtime:
    config: GatewayConfig
    router: Router
    extractor: TokenExtractor
    issuers: IssuerTable
    claim_plan: ClaimHeaderPlan
    header_plan: HeaderPlan
    keystore: KeyStore
    upstream: Upstream
    max_token_bytes: int
    cors_bypass: bool
    dpop: DpopBinder
    client_certs: ClientCertificates
    decision: DecisionEdge  # the authz listener's reading of checks and shape of answers
    loaded_at: float = field(default_factory=time.time)  # epoch seconds: when this config took effect
    decryption: DecryptionKeyStore | None = None  # absent: every JWE is refused


def build_runtime(
    config: GatewayConfig,
    keystore: KeyStore,
    previous: Runtime | None = None,
    decryption: DecryptionKeyStore | None = None,
    dpop_shared: DpopShared | None = None,
) -> Runtime:
    """Compile everything the request path needs; raises nothing for a validated config.

    The upstream connection pool of `previous` is kept when the upstream settings did not change.
    `dpop_shared` is the process's DPoP replay memory and nonce key (made here when not given).
    """
    dpop = DpopBinder(config, dpop_shared or DpopShared.create())
    issuers = []
    for cfg in config.issuers:
        policy = VerifyPolicy(
            algorithms=frozenset(cfg.algorithms),
            claims=ClaimPolicy(
                issuer=cfg.issuer,
                audiences=None if cfg.audiences is None else frozenset(cfg.audiences),
                clock_skew=cfg.clock_skew,
                require_expiration=cfg.require_expiration,
                max_lifetime=cfg.max_lifetime,
            ),
            typ=cfg.typ,
        )
        issuers.append(IssuerRuntime(cfg.name, cfg.issuer, policy, keystore.get(cfg.name), cfg.require_encryption))
    claim_plan = ClaimHeaderPlan(config.forward)
    return Runtime(
        config=config,
        router=Router(config.routes),
        extractor=TokenExtractor(config.tokens, dpop_scheme=dpop.enabled),
        issuers=IssuerTable(by_iss={i.iss: i for i in issuers}, by_name={i.name: i for i in issuers}),
        claim_plan=claim_plan,
        header_plan=HeaderPlan.build(
            claim_plan.strip_names, config.forward.keep_authorization, drop_dpop_proof=dpop.enabled
        ),
        keystore=keystore,
        upstream=(
            previous.upstream
            if previous is not None and previous.config.upstream == config.upstream
            else Upstream(config.upstream)
        ),
        max_token_bytes=config.server.max_token_bytes,
        cors_bypass=config.server.cors_preflight == "bypass",
        dpop=dpop,
        decryption=decryption,
        client_certs=ClientCertificates(config.server.forwarded_client_cert),
        decision=DecisionEdge(
            config.server.authz_dialect, config.server.authz_path_prefix, claim_plan.strip_names
        ),
    )
