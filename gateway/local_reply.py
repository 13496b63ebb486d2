"""Every response the gateway writes itself, from one table: status, RFC 6750 challenge, JSON body."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from gateway.jose.errors import Reason


class Decision(StrEnum):
    """What the gateway decided for a request: the access-log `decision` and the reply table key."""

    ALLOW = "allow"  # forwarded upstream (authz listener: answered 200)
    NO_TOKEN = "no_token"  # required route without a token
    INVALID_REQUEST = "invalid_request"  # tokens in more than one place (RFC 6750 §2)
    INVALID_TOKEN = "invalid_token"
    INVALID_DPOP_PROOF = "invalid_dpop_proof"  # RFC 9449 §7.1
    USE_DPOP_NONCE = "use_dpop_nonce"  # RFC 9449 §9
    DPOP_REPLAY_FULL = "dpop_replay_full"  # no room to remember another proof: fail closed
    INSUFFICIENT_SCOPE = "insufficient_scope"
    KEYS_UNAVAILABLE = "keys_unavailable"
    NO_ROUTE = "no_route"
    BAD_PATH = "bad_path"
    HEADERS_TOO_LARGE = "headers_too_large"
    BAD_REQUEST = "bad_request"  # unparseable HTTP
    AMBIGUOUS_CHECK = "ambiguous_check"  # authz listener: the original request not conveyed unambiguously
    HEAD_TIMEOUT = "head_timeout"  # the request head did not arrive within server.header_timeout
    BODY_TIMEOUT = "body_timeout"  # no request body byte within server.body_timeout while awaited
    OVERLOADED = "overloaded"  # shed: server.max_inflight requests already in progress
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL_ERROR = "internal_error"  # a bug of ours; never a stack trace to the client


@dataclass(frozen=True, slots=True)
class _Row:
    status: int
    error: str
    description: str
    challenge: str | None = None  # WWW-Authenticate value, without error_description


_REALM = 'Bearer realm="gateway"'

REPLIES: dict[Decision, _Row] = {
    # RFC 6750 §3.1: with no credentials the challenge carries no error code.
    Decision.NO_TOKEN: _Row(401, "unauthorized", "a bearer token is required", _REALM),
    Decision.INVALID_REQUEST: _Row(400, "invalid_request", "a token was sent in more than one place", f'{_REALM}, error="invalid_request"'),
    Decision.INVALID_TOKEN: _Row(401, "invalid_token", "the token is not valid", f'{_REALM}, error="invalid_token"'),
    Decision.INVALID_DPOP_PROOF: _Row(401, "invalid_dpop_proof", "the DPoP proof is not valid", 'DPoP error="invalid_dpop_proof"'),
    Decision.USE_DPOP_NONCE: _Row(401, "use_dpop_nonce", "the DPoP proof must carry the current server nonce", 'DPoP error="use_dpop_nonce"'),
    Decision.DPOP_REPLAY_FULL: _Row(503, "temporarily_unavailable", "too many DPoP proofs to remember; retry shortly"),
    Decision.INSUFFICIENT_SCOPE: _Row(403, "insufficient_scope", "the token lacks a claim this route requires", f'{_REALM}, error="insufficient_scope"'),
    Decision.KEYS_UNAVAILABLE: _Row(503, "temporarily_unavailable", "the issuer's signing keys are not available yet"),
    Decision.NO_ROUTE: _Row(404, "not_found", "no route matches this request"),
    Decision.BAD_PATH: _Row(400, "invalid_path", "the request path cannot be normalized safely"),
    Decision.HEADERS_TOO_LARGE: _Row(431, "headers_too_large", "a request header line is too long"),
    Decision.BAD_REQUEST: _Row(400, "bad_request", "the request is not valid HTTP"),
    Decision.AMBIGUOUS_CHECK: _Row(400, "invalid_request", "the check does not convey one original request unambiguously"),
    Decision.HEAD_TIMEOUT: _Row(408, "request_timeout", "the request head did not arrive in time"),
    Decision.BODY_TIMEOUT: _Row(408, "request_timeout", "the request body did not arrive in time"),
    Decision.OVERLOADED: _Row(503, "overloaded", "the gateway is at capacity; retry shortly"),
    Decision.UPSTREAM_UNREACHABLE: _Row(502, "bad_gateway", "the upstream could not be reached"),
    Decision.UPSTREAM_TIMEOUT: _Row(504, "gateway_timeout", "the upstream did not answer in time"),
    Decision.INTERNAL_ERROR: _Row(500, "internal_error", "the gateway failed to handle this request"),
}

# Safe sentences for each rejection reason: the 401 error_description.
REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.MALFORMED: "the token is malformed",
    Reason.TOO_LARGE: "the token is too large",
    Reason.ALG_NOT_ALLOWED: "the token's algorithm is not allowed",
    Reason.UNSUPPORTED_CRIT: "the token requires an unsupported extension",
    Reason.BAD_TYPE: "the token's type is not allowed",
    Reason.UNKNOWN_KEY: "the token's signing key is unknown",
    Reason.BAD_SIGNATURE: "the token's signature is invalid",
    Reason.BAD_ISSUER: "the token's issuer is not accepted here",
    Reason.BAD_AUDIENCE: "the token's audience is not accepted",
    Reason.EXPIRED: "the token has expired",
    Reason.NOT_YET_VALID: "the token is not valid yet",
    Reason.MISSING_EXPIRATION: "the token has no expiration",
    Reason.LIFETIME_TOO_LONG: "the token's lifetime is too long",
    Reason.JWKS_UNAVAILABLE: "the issuer's signing keys are not available yet",
    Reason.DECRYPT_FAILED: "the encrypted token could not be decrypted",
    Reason.ENCRYPTION_REQUIRED: "the token must be encrypted",
    Reason.CERT_BINDING_MISMATCH: "the token is bound to a client certificate this connection did not present",
}


def token_refusal(reason: Reason) -> Decision:
    """The decision for a token refused with `reason`: 503 when the issuer's keys cannot be had, else 401."""
    return Decision.KEYS_UNAVAILABLE if reason is Reason.JWKS_UNAVAILABLE else Decision.INVALID_TOKEN


RETRY_AFTER_SECONDS = "5"
SHED_RETRY_AFTER_SECONDS = "1"  # capacity frees up within a request's time, not a key fetch's
# Every response the gateway writes names it without a version (aiohttp would add its own
# and Python's); a proxied response keeps the upstream's Server header.
SERVER_HEADER = ("Server", "gateway")
_BASE_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"), SERVER_HEADER)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One reply, built once: only the request id differs between two requests that get it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body_head: bytes | None  # the JSON body up to the request id's value (None: no body, gRPC's answers)
    http1_head: bytes  # status line and the fixed header lines, encoded once


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A local reply for one request: the prebuilt parts plus this request's id."""

    prepared: _Prepared
    request_id: str

    @property
    def status(self) -> int:
        return self.prepared.status

    @property
    def body(self) -> bytes:
        head = self.prepared.body_head
        return b"" if head is None else head + self.request_id.encode() + b'"}'

    def headers(self) -> list[tuple[str, str]]:
        """Every header but the framing (Content-Length), for a protocol that encodes its own."""
        return [*self.prepared.headers, ("X-Request-Id", self.request_id)]

    def for_grpc(self) -> LocalReply:
        """The same refusal as a gRPC answer: HTTP 200, trailers-only, grpc-status and grpc-message."""
        return LocalReply(_grpc(self.prepared), self.request_id)

    def with_status(self, status: int) -> LocalReply:
        """The same reply under another status (a front proxy that only understands some)."""
        return LocalReply(_restatus(self.prepared, status), self.request_id)


def _prepare(decision: Decision, reason: Reason | None) -> _Prepared:
    row = REPLIES[decision]
    description = row.description
    if reason is not None and decision is Decision.INVALID_TOKEN:
        description = REASON_DESCRIPTIONS.get(reason, description)
    headers = list(_BASE_HEADERS)
    if row.challenge is not None:
        if decision is Decision.NO_TOKEN:
            headers.append(("WWW-Authenticate", row.challenge))
        else:
            # Descriptions are fixed ASCII sentences without quotes (RFC 6750 §3).
            headers.append(("WWW-Authenticate", f'{row.challenge}, error_description="{description}"'))
    if row.status == 503:
        retry = SHED_RETRY_AFTER_SECONDS if decision is Decision.OVERLOADED else RETRY_AFTER_SECONDS
        headers.append(("Retry-After", retry))
    return _prepared(row.status, headers, row.error, description)


def _prepared(status: int, headers: list[tuple[str, str]], error: str, description: str) -> _Prepared:
    body = json.dumps({"error": error, "error_description": description, "request_id": ""})
    status_line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    http1_head = (status_line + "".join(f"{name}: {value}\r\n" for name, value in headers)).encode()
    return _Prepared(status, tuple(headers), body[: -len('"}')].encode(), http1_head)


@functools.lru_cache(maxsize=64)
def _restatus(prepared: _Prepared, status: int) -> _Prepared:
    head = prepared.http1_head.split(b"\r\n", 1)[1]
    status_line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
    return dataclasses.replace(prepared, status=status, http1_head=status_line + head)


# The SPEC's mapping of our statuses to gRPC codes (the rest as grpc/grpc's http-grpc-status-mapping.md).
GRPC_STATUS = {401: 16, 403: 7, 502: 14, 503: 14, 504: 14, 400: 13, 431: 13, 404: 12, 408: 4}
GRPC_UNKNOWN = 2


@functools.lru_cache(maxsize=128)
def _grpc(prepared: _Prepared) -> _Prepared:
    headers = dict(prepared.headers)
    description = json.loads(prepared.body_head + b'"}')["error_description"] if prepared.body_head else ""
    grpc = [
        ("Content-Type", "application/grpc"),
        ("grpc-status", str(GRPC_STATUS.get(prepared.status, GRPC_UNKNOWN))),
        # Our descriptions are printable ASCII without '%': already grpc-message's percent-encoding.
        ("grpc-message", description),
        SERVER_HEADER,
    ]
    grpc.extend((name, headers[name]) for name in ("WWW-Authenticate", "Retry-After", "DPoP-Nonce") if name in headers)
    head = "".join(f"{name}: {value}\r\n" for name, value in grpc)
    return _Prepared(200, tuple(grpc), None, b"HTTP/1.1 200 OK\r\n" + head.encode())


_PREPARED: dict[tuple[Decision, Reason | None], _Prepared] = {
    (decision, None): _prepare(decision, None) for decision in Decision if decision is not Decision.ALLOW
}
_PREPARED.update({(Decision.INVALID_TOKEN, reason): _prepare(Decision.INVALID_TOKEN, reason) for reason in Reason})


@dataclass(frozen=True, slots=True)
class DpopChallenge:
    """A refusal under the DPoP scheme or by the binding step (RFC 9449 §7.1): a fixed sentence
    without quotes, the accepted proof algorithms, the scheme the client used, a nonce to demand."""

    description: str
    algs: str
    dpop_scheme: bool = True
    nonce: str | None = None


def _dpop_reply(decision: Decision, request_id: str, dpop: DpopChallenge) -> LocalReply:
    # The challenge names the scheme the client used; a DPoP one lists the proof algorithms, and
    # a nonce demand carries exactly one fresh DPoP-Nonce (RFC 9449 §8).
    row = REPLIES[decision]
    headers = list(_BASE_HEADERS)
    if row.status == 503:
        headers.append(("Retry-After", RETRY_AFTER_SECONDS))
    elif dpop.dpop_scheme:
        headers.append(("WWW-Authenticate", f'DPoP error="{row.error}", error_description="{dpop.description}", algs="{dpop.algs}"'))
    else:
        headers.append(("WWW-Authenticate", f'{_REALM}, error="{row.error}", error_description="{dpop.description}"'))
    if dpop.nonce is not None:
        headers.append(("DPoP-Nonce", dpop.nonce))
    return LocalReply(_prepared(row.status, headers, row.error, dpop.description), request_id)


def reply(
    decision: Decision, request_id: str, reason: Reason | None = None, dpop: DpopChallenge | None = None
) -> LocalReply:
    """The local reply for `decision`; `reason` refines an invalid_token description, `dpop` makes
    it a DPoP challenge.

    request_id is one the gateway made or a client's that matched [A-Za-z0-9._:-]{1,128}
    (or "-"), so it needs no JSON escaping.
    """
    if dpop is not None:
        return _dpop_reply(decision, request_id, dpop)
    return LocalReply(_PREPARED.get((decision, reason)) or _PREPARED[(decision, None)], request_id)
