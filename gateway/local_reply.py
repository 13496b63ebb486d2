"""Every response the gateway writes itself, from one table: status, RFC 6750 challenge, JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from gateway.jose.errors import Reason


class Decision(StrEnum):
    """What the gateway decided for a request: the access-log `decision` and the reply table key."""

    ALLOW = "allow"  # forwarded upstream (authz listener: answered 200)
    NO_TOKEN = "no_token"  # required route without a token
    INVALID_REQUEST = "invalid_request"  # tokens in more than one place (RFC 6750 §2)
    INVALID_TOKEN = "invalid_token"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    KEYS_UNAVAILABLE = "keys_unavailable"
    NO_ROUTE = "no_route"
    BAD_PATH = "bad_path"
    HEADERS_TOO_LARGE = "headers_too_large"
    BAD_REQUEST = "bad_request"  # unparseable HTTP
    AMBIGUOUS_CHECK = "ambiguous_check"  # authz listener: the original request not conveyed unambiguously
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
    Decision.INSUFFICIENT_SCOPE: _Row(403, "insufficient_scope", "the token lacks a claim this route requires", f'{_REALM}, error="insufficient_scope"'),
    Decision.KEYS_UNAVAILABLE: _Row(503, "temporarily_unavailable", "the issuer's signing keys are not available yet"),
    Decision.NO_ROUTE: _Row(404, "not_found", "no route matches this request"),
    Decision.BAD_PATH: _Row(400, "invalid_path", "the request path cannot be normalized safely"),
    Decision.HEADERS_TOO_LARGE: _Row(431, "headers_too_large", "a request header line is too long"),
    Decision.BAD_REQUEST: _Row(400, "bad_request", "the request is not valid HTTP"),
    Decision.AMBIGUOUS_CHECK: _Row(400, "invalid_request", "the check does not convey one original request unambiguously"),
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
# Every response the gateway writes names it without a version (aiohttp would add its own
# and Python's); a proxied response keeps the upstream's Server header.
SERVER_HEADER = ("Server", "gateway")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One reply, built once: only the request id differs between two requests that get it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body_head: bytes  # the JSON body up to the request id's value


def _prepare(decision: Decision, reason: Reason | None) -> _Prepared:
    row = REPLIES[decision]
    description = row.description
    if reason is not None and decision is Decision.INVALID_TOKEN:
        description = REASON_DESCRIPTIONS.get(reason, description)
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), SERVER_HEADER]
    if row.challenge is not None:
        if decision is Decision.NO_TOKEN:
            headers.append(("WWW-Authenticate", row.challenge))
        else:
            # Descriptions are fixed ASCII sentences without quotes (RFC 6750 §3).
            headers.append(("WWW-Authenticate", f'{row.challenge}, error_description="{description}"'))
    if row.status == 503:
        headers.append(("Retry-After", RETRY_AFTER_SECONDS))
    body = json.dumps({"error": row.error, "error_description": description, "request_id": ""})
    return _Prepared(row.status, tuple(headers), body[: -len('"}')].encode())


_PREPARED: dict[tuple[Decision, Reason | None], _Prepared] = {
    (decision, None): _prepare(decision, None) for decision in Decision if decision is not Decision.ALLOW
}
_PREPARED.update({(Decision.INVALID_TOKEN, reason): _prepare(Decision.INVALID_TOKEN, reason) for reason in Reason})


def reply(decision: Decision, request_id: str, reason: Reason | None = None) -> web.Response:
    """The local reply for `decision`; `reason` refines an invalid_token description.

    request_id is one the gateway made or a client's that matched [A-Za-z0-9._:-]{1,128}
    (or "-"), so it needs no JSON escaping.
    """
    prepared = _PREPARED.get((decision, reason)) or _PREPARED[(decision, None)]
    response = web.Response(
        status=prepared.status, body=prepared.body_head + request_id.encode() + b'"}', headers=prepared.headers
    )
    response.headers["X-Request-Id"] = request_id
    return response
