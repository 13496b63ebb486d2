"""The DPoP binding step (RFC 9449 §7): a verified token and its request's proof must belong together.

Runs on every request with a token, cached or not, at the end of authentication (so a
refusal is the verification result):

- `Bearer` scheme: a token carrying `cnf.jkt` is refused whatever the mode (§7.2:
  no downgrade); with mode `required`, so is every token (it must be DPoP-bound).
- `DPoP` scheme: the token must carry `cnf.jkt`, its issuer must have DPoP on, and
  exactly one `DPoP` header must hold a proof that passes jose.dpop's checks for
  this method, external URI and token; then the server nonce (when demanded), the
  key binding (`cnf.jkt` = the proof key's thumbprint) and, last, the replay check,
  the only step that writes state.

Every refusal is a DpopRefusal carrying what local_reply needs for the answer and
the metric/log labels. The external URI for `htu` is `server.public_origin` when
set, else X-Forwarded-Proto/-Host from a peer in `server.trusted_proxies`, else
the listener's scheme and the request's host (its Host header; on the authz port
the conveyed one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from gateway.asked import Headers, header_values
from gateway.config.model import DpopMode, GatewayConfig
from gateway.dpop_state import DpopShared, Nonce, Nonces, Replay
from gateway.jose.dpop import (
    DpopError,
    DpopPolicy,
    ExternalUri,
    ProofKeys,
    check_proof,
    confirmation_jkt,
    origin_of,
)
from gateway.jose.errors import TokenError
from gateway.jose.trace import BINDING, Trace
from gateway.local_reply import Decision, DpopChallenge
from gateway.peers import TrustedPeers
from gateway.sanitize import normalize_path

DPOP_HEADER: Final = "DPoP"


class Refusal(Enum):
    PROOF = "invalid_dpop_proof"  # 401, DPoP challenge
    NONCE = "use_dpop_nonce"  # 401 with a fresh DPoP-Nonce
    TOKEN = "invalid_token"  # 401 under the scheme the client used
    UNAVAILABLE = "unavailable"  # 503: the replay memory has no room


# The reply-table row each kind of refusal answers with.
DPOP_DECISIONS: Final = {
    Refusal.PROOF: Decision.INVALID_DPOP_PROOF,
    Refusal.NONCE: Decision.USE_DPOP_NONCE,
    Refusal.TOKEN: Decision.INVALID_TOKEN,
    Refusal.UNAVAILABLE: Decision.DPOP_REPLAY_FULL,
}


class DpopRefusal(Exception):
    """A request refused by the binding step: `result` is the metric label, `reason` the log reason."""

    __slots__ = ("description", "kind", "nonce", "reason", "result")

    def __init__(self, kind: Refusal, result: str, reason: str, description: str, nonce: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.result = result
        self.reason = reason
        self.description = description
        self.nonce = nonce


@dataclass(frozen=True, slots=True)
class IssuerDpop:
    """One issuer's compiled DPoP rules."""

    mode: DpopMode
    policy: DpopPolicy
    nonce: bool
    algs: str  # for the challenge's algs parameter (RFC 9449 §7.1)


class DpopBinder:
    """The compiled `issuers[].dpop` and `server.public_origin/trusted_proxies`, over the process's shared state."""

    def __init__(self, config: GatewayConfig, shared: DpopShared, clock: Callable[[], float] = time.time) -> None:
        self.issuers: dict[str, IssuerDpop] = {}
        for issuer in config.issuers:
            cfg = issuer.dpop
            self.issuers[issuer.name] = IssuerDpop(
                cfg.mode, DpopPolicy(frozenset(cfg.algorithms), cfg.max_age, issuer.clock_skew), cfg.nonce,
                " ".join(cfg.algorithms),
            )
        # The DPoP scheme is a token scheme only when some issuer uses it.
        self.enabled = any(d.mode != "off" for d in self.issuers.values())
        self._all_algs = " ".join(dict.fromkeys(a for d in self.issuers.values() if d.mode != "off" for a in d.algs.split()))
        self._origin = config.server.public_origin
        self._proxies = TrustedPeers(config.server.trusted_proxies)
        self._max_bytes = config.server.max_token_bytes
        self._replay = shared.replay
        self._nonces = Nonces(shared.nonce_key, clock)
        self._keys = ProofKeys()
        self._clock = clock

    def algs(self, issuer_name: str | None) -> str:
        """The challenge's algs: the issuer's proof algorithms, or every enabled issuer's when unknown."""
        issuer = self.issuers.get(issuer_name) if issuer_name is not None else None
        return issuer.algs if issuer is not None and issuer.mode != "off" else self._all_algs

    def challenge(self, refusal: DpopRefusal, issuer_name: str | None, dpop_scheme: bool) -> DpopChallenge:
        """How a refusal is answered: under the scheme the client used, with the issuer's proof algorithms."""
        return DpopChallenge(refusal.description, self.algs(issuer_name), dpop_scheme, refusal.nonce)

    def check(
        self,
        *,
        issuer_name: str,
        claims: Mapping[str, Any],
        token: str,
        dpop_scheme: bool,
        method: str,
        path: str,
        headers: Headers,
        host: str | None,
        scheme: str,
        peer: str | None,
        trace: Trace | None = None,
    ) -> str | None:
        """Raise DpopRefusal unless the token may be used this way; return a fresh nonce to send
        with the answer when the proof used the previous one (RFC 9449 §8.2), else None.
        With a `trace` (gateway explain), each check is recorded as it is made."""
        note = trace.add if trace is not None else _no_trace
        issuer = self.issuers[issuer_name]
        try:
            jkt = confirmation_jkt(claims)
        except TokenError as exc:  # the token's own fault, whatever the scheme
            raise _refused(note, "cnf", Refusal.TOKEN, "dpop_binding_mismatch", exc.reason.value,
                           "the token is malformed") from exc
        note(BINDING, "cnf.jkt", None, f"bound to key {jkt}" if jkt else "absent: the token is not bound to a key")
        if not dpop_scheme:
            if jkt is not None:
                raise _refused(note, "Bearer scheme", Refusal.TOKEN, "dpop_binding_mismatch", "dpop_bound_token_as_bearer",
                               "the token is bound to a key: send it with the DPoP scheme and a proof")
            if issuer.mode == "required":
                raise _refused(note, "Bearer scheme", Refusal.TOKEN, "dpop_missing", "dpop_required",
                               "this issuer's tokens must be DPoP-bound and sent with the DPoP scheme")
            note(BINDING, "Bearer scheme", True, f"an unbound token, DPoP mode {issuer.mode}")
            return None
        if issuer.mode == "off":
            raise _refused(note, "DPoP scheme", Refusal.TOKEN, "dpop_binding_mismatch", "dpop_off_for_issuer",
                           "this issuer's tokens are not accepted with the DPoP scheme")
        if jkt is None:
            raise _refused(note, "DPoP scheme", Refusal.TOKEN, "dpop_binding_mismatch", "dpop_unbound_token",
                           "the token is not bound to a key, so it cannot be sent with the DPoP scheme")
        # RFC 9449 §4.3 step 1: one DPoP header, no more, no less.
        proofs = header_values(headers, DPOP_HEADER)
        if not proofs:
            raise _refused(note, "DPoP header", Refusal.PROOF, "dpop_missing", "dpop_missing",
                           "a DPoP proof header is required")
        if len(proofs) > 1:
            raise _refused(note, "DPoP header", Refusal.PROOF, "dpop_invalid", "dpop_multiple",
                           "more than one DPoP proof header")
        now = self._clock()
        uri = self.external_uri(headers, host, scheme, peer, path)
        if uri is None:
            raise _refused(note, "htu origin", Refusal.PROOF, "dpop_invalid", "dpop_no_host",
                           "the request's host cannot be determined")
        try:
            proof = check_proof(
                proofs[0], issuer.policy, method=method, uri=uri, access_token=token, now=now,
                normalize_path=normalize_path, max_bytes=self._max_bytes, keys=self._keys,
            )
        except DpopError as exc:
            raise _refused(note, "proof", Refusal.PROOF, "dpop_invalid", exc.reason.value, exc.description) from exc
        note(BINDING, "proof", True, f"{method} {uri.scheme}://{uri.authority}{uri.path}, iat {proof.iat:.0f}")
        fresh_nonce = None
        if issuer.nonce:
            # RFC 9449 §9: the resource server's own nonce; §11.3: never accepted without one.
            state = self._nonces.check(proof.nonce, issuer.policy.max_age)
            if state is Nonce.INVALID:
                raise _refused(note, "server nonce", Refusal.NONCE, "dpop_nonce", "dpop_nonce",
                               "the DPoP proof must carry the current server nonce",
                               nonce=self._nonces.current(issuer.policy.max_age))
            if state is Nonce.PREVIOUS:
                fresh_nonce = self._nonces.current(issuer.policy.max_age)
            note(BINDING, "server nonce", True, state.value)
        # §4.3 step 12, second half: the proof's key is the one the token is bound to (§6.1).
        if proof.jkt != jkt:
            raise _refused(note, "key binding", Refusal.TOKEN, "dpop_binding_mismatch", "dpop_binding_mismatch",
                           "the DPoP proof's key is not the key the token is bound to")
        note(BINDING, "key binding", True, "the proof's key thumbprint is cnf.jkt")
        # §11.1: a proof is accepted once while its iat is in the window (every worker shares this memory).
        policy = issuer.policy
        until = proof.iat + policy.max_age + policy.clock_skew
        verdict = self._replay.check_and_add(proof.jkt, proof.jti, until, now)
        if verdict is Replay.REPLAYED:
            raise _refused(note, "replay", Refusal.PROOF, "dpop_replayed", "dpop_replayed",
                           "the DPoP proof was used before")
        if verdict is Replay.FULL:
            raise _refused(note, "replay", Refusal.UNAVAILABLE, "dpop_replay_full", "dpop_replay_full",
                           "too many DPoP proofs in flight to remember; retry shortly")
        note(BINDING, "replay", True, "jti not seen before in its window")
        return fresh_nonce

    def external_uri(
        self, headers: Headers, host: str | None, scheme: str, peer: str | None, path: str
    ) -> ExternalUri | None:
        """The URI the client addressed: public_origin; else a trusted proxy's forwarding headers; else ours."""
        if self._origin is not None:
            return ExternalUri(self._origin[0], self._origin[1], path)
        origin = None
        if peer in self._proxies:
            proto = _nearest(header_values(headers, "X-Forwarded-Proto"))
            forwarded_host = _nearest(header_values(headers, "X-Forwarded-Host"))
            if proto is not None and forwarded_host is not None and proto.lower() in ("http", "https"):
                origin = origin_of(proto, forwarded_host)
                if origin is None:
                    return None
        if origin is None:
            # The request's own host: the Host header, or on the authz port the conveyed one.
            if not host:
                return None
            origin = origin_of(scheme, host)
            if origin is None:
                return None
        return ExternalUri(origin[0], origin[1], path)

def _no_trace(step: str, name: str, ok: bool | None, detail: str = "") -> None:
    """The request path records nothing."""


def _refused(
    note: Callable[[str, str, bool | None, str], None], check: str, kind: Refusal, result: str, reason: str,
    description: str, nonce: str | None = None,
) -> DpopRefusal:
    note(BINDING, check, False, description)
    return DpopRefusal(kind, result, reason, description, nonce)


def _nearest(values: list[str]) -> str | None:
    """The last element of a forwarding header: the one our trusted peer wrote (earlier ones may be
    whatever the client sent, when a proxy appends rather than replaces)."""
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1].strip()
    return last or None
