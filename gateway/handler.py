"""THE request path: sanitize -> route -> extract -> authn -> binding -> authz -> claim headers -> forward or answer -> record.

Two ports share it. On the proxy port (`Gateway.handle`) a request is judged and
forwarded; on the authz port (`Gateway.handle_check`) another proxy's check names
the request to judge, and the verdict is answered instead of forwarded. Steps 1-5
(`_judge`) are the same code for both, so a decision answer and a proxied request
differ only in the last step. Read top to bottom to follow one request; each step
is one call into a module with one job, and every reply the gateway writes itself
comes from local_reply's table.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.access_log import AccessLog, Exchange, Listener
from gateway.asked import Asked
from gateway.authn import Authenticator
from gateway.decision import ConveyError
from gateway.dpop_binding import DPOP_DECISIONS, DpopRefusal
from gateway.edge import ServerRequest
from gateway.extract import ExtractError
from gateway.forward import UpstreamTimeout, UpstreamUnreachable
from gateway.grpc import is_grpc
from gateway.jose.errors import Reason, TokenError
from gateway.local_reply import REASON_DESCRIPTIONS, REPLIES, Decision, DpopChallenge, LocalReply, reply, token_refusal
from gateway.metrics import Metrics
from gateway.runtime import Runtime
from gateway.sanitize import PathError, normalize_path
from gateway.token_cache import VerifiedToken

log = logging.getLogger("gateway.request")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
CLIENT_CLOSED = 499  # nginx's convention: the client went away before the answer
_Serve = Callable[[ServerRequest, Runtime, Exchange], Awaitable[int]]  # answers, returns the status


@dataclass(frozen=True, slots=True)
class Refused:
    """A verdict against the request: the reply table's key, and the token reason refining it."""

    decision: Decision
    reason: Reason | None = None
    dpop: DpopChallenge | None = None  # a refusal under the DPoP scheme or by the binding step


# A verdict: the claim headers of an allowed request, or why it is refused.
Verdict = list[tuple[str, str]] | Refused


class Gateway:
    """The live runtime (swapped whole on reload) and the request handlers that read it."""

    def __init__(
        self, runtime: Runtime, authn: Authenticator, metrics: Metrics, log: AccessLog
    ) -> None:
        self.runtime = runtime
        self.authn = authn
        self.metrics = metrics
        self.log = log
        self.draining = False

    async def handle(self, request: ServerRequest) -> None:
        """The proxy port: judge the request, then forward it."""
        await self._exchange(request, Listener.PROXY, self._proxy)

    async def handle_check(self, request: ServerRequest) -> None:
        """The authz port: judge the request a check conveys, then answer it."""
        await self._exchange(request, Listener.AUTHZ, self._check)

    async def _exchange(self, request: ServerRequest, listener: Listener, serve: _Serve) -> None:
        rt = self.runtime  # one config for the whole request, even if a reload lands meanwhile
        ex = Exchange(
            request_id=_request_id(request), method=request.method, started=time.perf_counter(), listener=listener
        )
        self.metrics.add_inflight(1)
        try:
            ex.status = await serve(request, rt, ex)
        except asyncio.CancelledError:
            ex.status = self._gone(request, ex)
            raise
        except ConnectionError:
            ex.status = self._gone(request, ex)
        except Exception:
            ex.status = 500  # the server edge answers with our internal_error reply
            ex.decision = Decision.INTERNAL_ERROR
            raise
        finally:
            self.metrics.add_inflight(-1)
            self._record(ex)

    async def _proxy(self, request: ServerRequest, rt: Runtime, ex: Exchange) -> int:
        # The request asks for itself; forwarding headers (X-Original-URI...) are ordinary headers here.
        asked = Asked.from_target(request.method, request.headers.get("Host"), request.raw_path, request.headers)
        # A certificate-bound token's proof of possession: this connection's client certificate.
        verdict = await self._judge(
            asked, rt, ex, lambda: rt.client_certs.thumbprint(request.transport, request.remote, request.headers),
            request.scheme, request.remote,
        )
        if isinstance(verdict, Refused):
            return _refusal(request, reply(verdict.decision, ex.request_id, verdict.reason, verdict.dpop))

        # 6. The upstream request's headers: every client copy of ours stripped first, then ours set.
        websocket = _is_websocket(request)
        headers = rt.header_plan.request_headers(
            request.headers,
            remote=request.remote,
            scheme=request.scheme,
            request_id=ex.request_id,
            extra=verdict,
        )
        path_qs = f"{ex.path}?{asked.query}" if asked.query else ex.path

        # 7. Forward. The body is asked for only now, so a refused request never uploads it.
        try:
            if websocket:
                return await rt.upstream.websocket(request, path_qs, headers, ex)
            request.send_continue()  # only now, once authorized (RFC 9110 §10.1.1)
            # RFC 9449 §8.2: a proof with the previous nonce is answered with the current one.
            fresh = (("DPoP-Nonce", ex.dpop_nonce), ("Cache-Control", "no-store")) if ex.dpop_nonce else ()
            return await rt.upstream.forward(request, path_qs, headers, ex, fresh)
        except UpstreamUnreachable:
            return self._refuse(request, ex, Decision.UPSTREAM_UNREACHABLE)
        except UpstreamTimeout:
            return self._refuse(request, ex, Decision.UPSTREAM_TIMEOUT)

    async def _check(self, request: ServerRequest, rt: Runtime, ex: Exchange) -> int:
        # 0. Which request the check conveys: forwarding headers are trusted on this port only.
        try:
            conveyed = rt.decision.read(request.method, request.raw_path, request.headers.get("Host"), request.headers)
        except ConveyError as exc:
            ex.reason = exc.kind
            ex.decision = exc.decision
            return _send(request, rt.decision.refused(exc.family, exc.decision, ex.request_id))
        ex.method = conveyed.asked.method
        # No client certificate: the asking proxy's connection proves nothing of its client's,
        # so a certificate-bound token is refused here (SPEC: Decision mode).
        verdict = await self._judge(conveyed.asked, rt, ex, _no_client_certificate, request.scheme, request.remote)
        if isinstance(verdict, Refused):
            return _send(
                request,
                rt.decision.refused(conveyed.family, verdict.decision, ex.request_id, verdict.reason, verdict.dpop),
            )
        # 6. Answer instead of forwarding: the asking proxy copies the claim headers upstream.
        await request.send_response(200, "OK", rt.decision.allowed(conveyed.family, verdict, ex.request_id), b"")
        return 200

    async def _judge(
        self, asked: Asked, rt: Runtime, ex: Exchange, client_certificate: Callable[[], str | None],
        scheme: str, peer: str | None,
    ) -> Verdict:
        """Steps 1-5, the same for both ports: path, route, token and its bindings, claim rules, claim headers.

        `client_certificate` gives the thumbprint of the certificate the client proved it holds;
        `scheme` and `peer` are the listener's and the connection's, for DPoP's external URI.
        """
        # 1. One spelling of the path, for routing and for the upstream alike.
        try:
            path = normalize_path(asked.raw_path)
        except PathError as exc:
            ex.reason = exc.kind
            return self._refused(ex, Decision.BAD_PATH)
        ex.path = path

        # 2. First matching route.
        route = rt.router.match(asked.method, asked.host, path)
        if route is None:
            return self._refused(ex, Decision.NO_ROUTE)
        ex.route = route.name

        # 3. Authentication: public routes look at no token; CORS preflights carry none.
        if route.auth == "public" or (rt.cors_bypass and _is_preflight(asked)):
            return []
        try:
            token, dpop_scheme = rt.extractor.extract_with_scheme(asked.headers, asked.query)
        except ExtractError as exc:
            if exc.kind == "multiple":
                ex.reason = "multiple_tokens"
                _debug_refusal(ex, check=exc.message)
                return self._refused(ex, Decision.INVALID_REQUEST)
            ex.reason = Reason.MALFORMED.value
            _debug_refusal(ex, check=exc.message)
            return self._refused(ex, Decision.INVALID_TOKEN, Reason.MALFORMED)
        if token is None:
            return self._refused(ex, Decision.NO_TOKEN) if route.auth == "required" else []
        def dpop_binding(entry: VerifiedToken) -> None:
            # Sender constraint (RFC 9449): the token's cnf.jkt and the request's DPoP proof belong
            # together, on every request, cached token or not. It runs inside authentication, so
            # its refusal is the verification result.
            ex.issuer = entry.issuer_name
            ex.dpop_nonce = rt.dpop.check(
                issuer_name=entry.issuer_name, claims=entry.claims, token=token, dpop_scheme=dpop_scheme,
                method=asked.method, path=path, headers=asked.headers, host=asked.host, scheme=scheme, peer=peer,
            )

        try:
            verified = await self.authn.authenticate(
                token, route, rt.issuers, rt.max_token_bytes, client_certificate=client_certificate,
                decryption=rt.decryption, dpop_binding=dpop_binding,
            )
        except TokenError as exc:
            ex.reason = exc.reason  # a StrEnum: its value, without .value's descriptor
            _debug_refusal(ex, check=exc.description)
            decision = token_refusal(exc.reason)
            # RFC 9449 §7.1: the token's own faults are answered under the scheme it came with.
            dpop = None
            if dpop_scheme and decision is Decision.INVALID_TOKEN:
                dpop = DpopChallenge(REASON_DESCRIPTIONS[exc.reason], rt.dpop.algs(ex.issuer))
            return self._refused(ex, decision, exc.reason, dpop)
        except DpopRefusal as refusal:
            ex.reason = refusal.reason
            _debug_refusal(ex, check=refusal.description)
            if ex.issuer is not None:
                self.metrics.dpop_check(ex.issuer, refusal.result).inc()
            return self._refused(ex, DPOP_DECISIONS[refusal.kind], dpop=rt.dpop.challenge(refusal, ex.issuer, dpop_scheme))
        if dpop_scheme:
            self.metrics.dpop_check(verified.issuer_name, "ok").inc()
        ex.issuer = verified.issuer_name
        sub = verified.claims.get("sub")
        ex.sub = sub if isinstance(sub, str) else None

        # 4. Authorization: the route's claim rules, on every request, cached token or not.
        failed = route.rules.first_failure(verified.claims)
        if failed is not None:
            ex.reason = "claim_rule"
            _debug_refusal(ex, check=f"claim rule on {failed!r} does not hold")
            return self._refused(ex, Decision.INSUFFICIENT_SCOPE)

        # 5. Claim headers (the payload header is the signed JWS's payload segment: the token's
        #    own middle segment, or for an encrypted token the one inside).
        return rt.claim_plan.headers(verified.claims, verified.payload_b64 or token.split(".", 2)[1])

    def record_unparsed(self, decision: Decision, listener: Listener) -> None:
        """Count and log a request the request path never saw: unparseable (400, 431), a head too
        slow (408) or shed (503)."""
        ex = Exchange(request_id="-", method="-", started=time.perf_counter(), decision=decision, listener=listener)
        ex.status = REPLIES[decision].status
        self._record(ex)

    @staticmethod
    def _refused(
        ex: Exchange, decision: Decision, reason: Reason | None = None, dpop: DpopChallenge | None = None
    ) -> Refused:
        ex.decision = decision
        return Refused(decision, reason, dpop)

    def _gone(self, request: ServerRequest, ex: Exchange) -> int:
        """The client went away mid-exchange (499), or stopped moving and the edge cut the request at
        a deadline (server.send_timeout, server.body_timeout): then the 408 it still owes, if any."""
        deadline = request.expired
        if deadline is None:
            return CLIENT_CLOSED
        ex.reason = deadline.reason
        if deadline.answer is None:
            return CLIENT_CLOSED
        return self._refuse(request, ex, deadline.answer)

    def _refuse(self, request: ServerRequest, ex: Exchange, decision: Decision) -> int:
        ex.decision = decision
        return _refusal(request, reply(decision, ex.request_id))

    def _record(self, ex: Exchange) -> None:
        duration = time.perf_counter() - ex.started
        children = self.metrics.route_children(ex.listener, ex.route, ex.status)
        children.requests(1)
        children.duration.observe(duration)
        if ex.upstream_seconds is not None:
            children.upstream.observe(ex.upstream_seconds)
        self.log.write(ex, duration)


# Made ids: a random per-process prefix and a counter. Unique, cheap (no syscall per
# request), and they reveal nothing but an order within one process.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _no_client_certificate() -> str | None:
    return None


def _request_id(request: ServerRequest) -> str:
    """Keep a sane client X-Request-Id so traces join up; make one otherwise."""
    given = request.headers.get("X-Request-Id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


def _debug_refusal(ex: Exchange, *, check: str) -> None:
    """With server.log_level debug: which check refused the token, as a safe sentence (never the token
    or a claim value; a claim rule is named by its configured claim path)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "token refused",
            extra={"request_id": ex.request_id, "route": ex.route, "reason": ex.reason, "issuer": ex.issuer, "check": check},
        )


def _is_preflight(asked: Asked) -> bool:
    headers = asked.headers
    return asked.method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def _is_websocket(request: ServerRequest) -> bool:
    headers = request.headers
    return (
        request.method == "GET"
        and headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("Connection", "").lower()
    )



def _refusal(request: ServerRequest, local: LocalReply) -> int:
    """The proxy port's refusals. One to a gRPC call is a gRPC answer (SPEC): HTTP 200, trailers-only,
    grpc-status and grpc-message; metrics and the access log keep the status it maps from (401, 403...)."""
    request.send_local(local.for_grpc() if is_grpc(request.headers) else local)
    return local.status


def _send(request: ServerRequest, local: LocalReply) -> int:
    request.send_local(local)
    return local.status
