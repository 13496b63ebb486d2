"""`gateway explain`: why a token would pass or fail on a route, each step in the order the server takes it.

Nothing here decides: the route comes from the runtime's Router, the token from
the Authenticator (with a `Trace`, which makes every check it and the JOSE core
make record what it compared), the claim rules from the route's ClaimRules, the
answer from local_reply's table. This module fetches keys as the server does
(or only file/inline ones with --offline) and renders the trace. It prints the
token's decoded header and claims, never its signature, a key or a secret.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.authn import Authenticator
from gateway.claim_path import MISSING
from gateway.config.model import GatewayConfig, RouteConfig
from gateway.decryption_keys import DecryptionKeyStore
from gateway.dpop_binding import DPOP_DECISIONS, DpopRefusal
from gateway.jose import trace as steps
from gateway.jose.errors import Reason, TokenError
from gateway.jose.jwe import is_compact_jwe, parse_jwe
from gateway.jose.jws import parse_token
from gateway.jose.trace import Trace
from gateway.keystore import KeyStore
from gateway.local_reply import Decision, DpopChallenge, reply, token_refusal
from gateway.metrics import Metrics
from gateway.process_log import rfc3339
from gateway.routing import Route
from gateway.runtime import Runtime, build_runtime
from gateway.sanitize import PathError, normalize_path
from gateway.token_cache import TokenCache

# What each step is called in the output, in the order a token meets them (see jose/trace.py).
STEP_TITLES = {
    steps.ROUTE: "route",
    steps.DECRYPTION: "decryption (JWE)",
    steps.DECODE: "decoding",
    steps.ISSUER: "issuer",
    steps.KEY: "key",
    steps.SIGNATURE: "signature",
    steps.CLAIMS: "claims",
    steps.BINDING: "sender binding (DPoP, mTLS)",
    steps.RULES: "claim rules",
}
_MARKS = {True: "ok  ", False: "FAIL", None: " -  "}
KEY_WAIT_MARGIN = 1.0


@dataclass
class Explanation:
    """The rendered steps and the gateway's answer; `allowed` decides the exit code."""

    lines: list[str] = field(default_factory=list)
    allowed: bool = False

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _json(value: Any) -> str:
    # ensure_ascii: a claim holding terminal control characters prints escaped, never raw.
    return json.dumps(value, ensure_ascii=True, sort_keys=True)


async def explain(
    config: GatewayConfig,
    token: str,
    *,
    method: str = "GET",
    path: str = "/",
    host: str | None = None,
    offline: bool = False,
    client_certificate: str | None = None,
    clock: Callable[[], float] = time.time,
    dpop_proof: str | None = None,
) -> Explanation:
    """Explain what the gateway configured by `config` would answer to `method path` carrying `token`.

    `client_certificate` is the thumbprint of the TLS client certificate to assume (certificate-bound tokens);
    with `dpop_proof` the token is sent with the DPoP scheme and this proof, else as a Bearer token.
    """
    out = Explanation()
    keystore = KeyStore(config.issuers)
    decryption = None
    if config.decryption is not None:
        decryption = DecryptionKeyStore(config.decryption)
        decryption.load()  # read once, as the server does at start; explain does not watch the file
    runtime = build_runtime(config, keystore, decryption=decryption)
    try:
        await _explain(out, runtime, token, method.upper(), path, host, offline, client_certificate, clock, dpop_proof)
    finally:
        await keystore.close()
        await runtime.upstream.close()
    return out


async def _explain(
    out: Explanation, rt: Runtime, token: str, method: str, path: str, host: str | None, offline: bool,
    client_certificate: str | None, clock: Callable[[], float], dpop_proof: str | None,
) -> None:
    config = rt.config
    out.lines.append(f"gateway explain: {method} {path}  (config {config.source}, sha256 {(config.sha256 or '-')[:12]})")
    iss = _show_token(out, token, config.server.max_token_bytes, rt.decryption)
    trace = Trace()

    # 1. The route, exactly as the handler finds it.
    try:
        normalized = normalize_path(path)
    except PathError as exc:
        trace.add(steps.ROUTE, "path", False, f"cannot be normalized safely ({exc.kind})")
        return _answer(out, trace, Decision.BAD_PATH)
    route = rt.router.match(method, host, normalized)
    if route is None:
        trace.add(steps.ROUTE, "match", False, f"no route matches {method} {normalized}")
        return _answer(out, trace, Decision.NO_ROUTE)
    trace.add(steps.ROUTE, route.name, True, _describe_route(config, route, normalized))
    if route.auth == "public":
        trace.add(steps.ROUTE, "auth", True, "public: no token is looked at")
        return _answer(out, trace, Decision.ALLOW)

    # 2. Keys, fetched as the server fetches them (only the issuer the token names is waited for).
    await rt.keystore.start(remote=not offline)
    issuer = rt.issuers.by_iss.get(iss) if isinstance(iss, str) else None
    if issuer is not None and issuer.keys.config.jwks is not None and not offline:
        jwks = issuer.keys.config.jwks
        deadline = time.monotonic() + 2 * jwks.timeout + KEY_WAIT_MARGIN  # discovery takes two fetches
        while not issuer.keys.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # 3. The token: the Authenticator's own checks, each recorded in the trace.
    authn = Authenticator(TokenCache(0, 1.0), Metrics(), clock=clock)
    try:
        verified = await authn.authenticate(
            token, route, rt.issuers, rt.max_token_bytes, trace,
            client_certificate=lambda: client_certificate, decryption=rt.decryption,
        )
    except TokenError as exc:
        if not any(check.ok is False for check in trace.checks):
            # A refusal no step recorded (verify_token's last resort): still say why.
            trace.add(steps.DECODE, "token", False, exc.description)
        if exc.reason is Reason.JWKS_UNAVAILABLE and issuer is not None:
            trace.add(steps.KEY, "key source", False, _key_source_note(issuer.keys.status(), offline))
        return _answer(out, trace, token_refusal(exc.reason), exc.reason)

    # 4. Sender binding (RFC 9449): the binding step the handler runs, on its own replay memory.
    # The scheme is DPoP when a proof is given; htu's origin is public_origin, else http:// --host.
    try:
        rt.dpop.check(
            issuer_name=verified.issuer_name, claims=verified.claims, token=token, dpop_scheme=dpop_proof is not None,
            method=method, path=normalized, headers={"DPoP": dpop_proof} if dpop_proof is not None else {},
            host=host, scheme="http", peer=None, trace=trace,
        )
    except DpopRefusal as refusal:
        challenge = rt.dpop.challenge(refusal, verified.issuer_name, dpop_proof is not None)
        return _answer(out, trace, DPOP_DECISIONS[refusal.kind], dpop=challenge)

    # 5. The route's claim rules, with the same compiled checks the handler runs.
    decision = Decision.ALLOW
    for outcome in route.rules.outcomes(verified.claims):
        rule = outcome.rule
        value = "absent" if outcome.value is MISSING else _json(outcome.value)
        trace.add(steps.RULES, f"{rule.claim} {rule.op} {_json(rule.value)}", outcome.holds, f"value {value}")
        if not outcome.holds:
            decision = Decision.INSUFFICIENT_SCOPE
    if not route.rules:
        trace.add(steps.RULES, "none", True, "the route has no claim rules")
    payload_b64 = verified.payload_b64 or token.split(".", 2)[1]
    headers = rt.claim_plan.headers(verified.claims, payload_b64) if decision is Decision.ALLOW else []
    _answer(out, trace, decision, claim_headers=headers)


def _show_token(out: Explanation, token: str, max_bytes: int, decryption: DecryptionKeyStore | None) -> object:
    """Print the decoded header and claims (not verified yet: that comes below); return the iss.

    A JWE's header is printed as received; its content only if our keys open it (the
    decryption step below says why not), and never its encrypted key, IV, ciphertext or tag."""
    out.lines.append("token")
    try:
        if is_compact_jwe(token):
            parts = parse_jwe(token, max_bytes=max_bytes)
            out.lines.append(f"  jwe header {_json(dict(parts.header))}")
            out.lines.append(f"  encrypted  ({len(token)} characters: key, IV, ciphertext and tag not shown)")
            if decryption is None:
                return None
            token = decryption.unwrap(token, max_bytes=max_bytes).jws
        parsed = parse_token(token, max_bytes=max_bytes)
    except TokenError as exc:
        out.lines.append(f"  cannot be decoded: {exc.description}")
        return None
    out.lines.append(f"  header     {_json(dict(parsed.jws.header))}")
    out.lines.append(f"  claims     {_json(dict(parsed.claims))}")
    out.lines.append(f"  signature  ({len(token.rsplit('.', 1)[-1])} characters, not shown)")
    return parsed.claims.get("iss")


def _describe_route(config: GatewayConfig, route: Route, path: str) -> str:
    cfg: RouteConfig = next(r for r in config.routes if r.name == route.name)
    match = ", ".join(f"{k} {v}" for k, v in (
        ("prefix", cfg.match.prefix), ("path", cfg.match.path), ("regex", cfg.match.regex),
        ("methods", cfg.match.methods and "/".join(cfg.match.methods)), ("host", cfg.match.host),
    ) if v) or "everything"
    issuers = "any issuer" if cfg.issuers is None else f"issuers {', '.join(cfg.issuers)}"
    return f"{path} matches ({match}); auth {cfg.auth}, {issuers}, {len(cfg.claims)} claim rule(s)"


def _key_source_note(status: Any, offline: bool) -> str:
    if offline and status.source in ("uri", "discovery"):
        return f"{status.source} keys are not fetched with --offline"
    if status.last_load is None:
        return f"{status.source} source has not answered yet"
    when, result = status.last_load
    return f"{status.source} source: last attempt {rfc3339(when)}, result {result}"


def _answer(
    out: Explanation, trace: Trace, decision: Decision, reason: Reason | None = None,
    claim_headers: list[tuple[str, str]] | None = None, dpop: DpopChallenge | None = None,
) -> None:
    step = None
    for check in trace.checks:
        if check.step != step:
            step = check.step
            out.lines.append(STEP_TITLES.get(step, step))
        out.lines.append(f"  {_MARKS[check.ok]} {check.name}: {check.detail}" if check.detail else f"  {_MARKS[check.ok]} {check.name}")
    out.lines.append("answer")
    if decision is Decision.ALLOW:
        out.allowed = True
        out.lines.append("  allowed: the request is forwarded upstream")
        for name, value in claim_headers or ():
            out.lines.append(f"  {name}: {value}")
        return
    response = reply(decision, "-", reason, dpop)
    out.lines.append(f"  {response.status} {decision.value}")
    challenge = next((value for name, value in response.headers() if name == "WWW-Authenticate"), None)
    if challenge is not None:
        out.lines.append(f"  WWW-Authenticate: {challenge}")
