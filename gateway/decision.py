"""The authz listener's edge: read which request a check conveys, and write the answer another proxy acts on.

A check request from nginx (`auth_request`, ingress-nginx `auth-url`), Traefik
(ForwardAuth) or Envoy / Istio (HTTP `ext_authz`) asks "may this request pass?".
The original request arrives in one family of headers:

- traefik: ``X-Forwarded-Method`` + ``X-Forwarded-Uri`` (origin-form), host from
  ``X-Forwarded-Host``;
- nginx: ``X-Original-Method`` + ``X-Original-URI`` (origin-form) and/or
  ingress-nginx's ``X-Original-URL`` (absolute; with both, the URL's origin-form
  part must equal the URI), host from ``X-Original-URL``, else the check's ``Host``;
- envoy: the check request's own method, target (``authz_path_prefix`` stripped,
  whole segments; outside it: 404) and ``Host``.

``auto`` picks the family whose headers are present (none: envoy). A client can add
headers its front proxy passes on, so ambiguity is refused (400), never guessed:
headers of two families, a family in part (a method without a URI or the reverse),
a repeated header, a URI that is not origin-form, a method that is not a token
(RFC 9110 §9.1). A pinned dialect ignores the other families' headers.

Answers: allowed is exactly 200 with an empty body, the claim headers and
``X-Request-Id``; for the envoy family also ``x-envoy-auth-headers-to-remove``
naming every claim header this answer does not set, so Envoy strips client-sent
copies. Refused is the proxy port's reply; for the nginx family, whose
``auth_request`` turns anything but 2xx/401/403 into 500, 400 and 404 become 403.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.asked import Asked, Headers, header_values
from gateway.config.model import AuthzDialect
from gateway.jose.errors import Reason
from gateway.local_reply import SERVER_HEADER, Decision, DpopChallenge, LocalReply, reply

__all__ = ["ConveyError", "DecisionEdge", "Family"]


class Family(StrEnum):
    """Which proxy's headers conveyed the original request."""

    TRAEFIK = "traefik"
    NGINX = "nginx"
    ENVOY = "envoy"


_TRAEFIK_METHOD, _TRAEFIK_URI, _TRAEFIK_HOST = "X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host"
_NGINX_METHOD, _NGINX_URI, _NGINX_URL = "X-Original-Method", "X-Original-URI", "X-Original-URL"
# The headers whose presence names a family (X-Forwarded-Host alone does not: every proxy sends it).
_MARKERS: Final = {
    Family.TRAEFIK: (_TRAEFIK_METHOD, _TRAEFIK_URI),
    Family.NGINX: (_NGINX_METHOD, _NGINX_URI, _NGINX_URL),
}
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 tchar: a method
# RFC 3986 §3: scheme "://" authority (no userinfo: a host is all we take) then the origin-form part.
_ABSOLUTE: Final = re.compile(r"(?i:https?)://([^/?#@\s]+)(/[^#]*)?")
_ENVOY_REMOVE = "x-envoy-auth-headers-to-remove"
# nginx's auth_request answers 500 for any status but 2xx, 401 and 403: refuse as 403 instead.
_NGINX_STATUS: Final = {400: 403, 404: 403}


class ConveyError(Exception):
    """The check does not convey one original request: `kind` is the log reason, `decision` the reply."""

    __slots__ = ("decision", "family", "kind")

    def __init__(self, kind: str, family: Family | None, decision: Decision = Decision.AMBIGUOUS_CHECK) -> None:
        super().__init__(kind)
        self.kind = kind
        self.family = family
        self.decision = decision


@dataclass(frozen=True, slots=True)
class Conveyed:
    family: Family
    asked: Asked


def _one(headers: Headers, name: str, family: Family) -> str | None:
    """The header's single value, None when absent; a repeated header is ambiguous."""
    values = header_values(headers, name)
    if len(values) > 1:
        raise ConveyError("repeated_header", family)
    return values[0] if values else None


def _method(value: str, family: Family) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise ConveyError("bad_method", family)
    return value


def _origin_form(value: str, family: Family) -> str:
    # RFC 9112 §3.2.1: origin-form is an absolute path and an optional query, nothing before it.
    if not value.startswith("/") or value.startswith("//"):
        raise ConveyError("not_origin_form", family)
    return value


class DecisionEdge:
    """The compiled decision settings: dialect, Envoy path prefix, claim header names."""

    __slots__ = ("_claim_names", "_dialect", "_prefix")

    def __init__(self, dialect: AuthzDialect, path_prefix: str, claim_header_names: Iterable[str]) -> None:
        self._dialect = dialect
        self._prefix = path_prefix
        self._claim_names = tuple(sorted(claim_header_names))

    # --- the question ---------------------------------------------------------------

    def read(self, method: str, target: str, host: str | None, headers: Headers) -> Conveyed:
        """The original request a check conveys; ConveyError when it is not conveyed unambiguously."""
        family = self._family(headers)
        if family is Family.TRAEFIK:
            return Conveyed(family, self._traefik(headers))
        if family is Family.NGINX:
            return Conveyed(family, self._nginx(host, headers))
        return Conveyed(family, self._envoy(method, target, host, headers))

    def _family(self, headers: Headers) -> Family:
        if self._dialect != "auto":
            return Family(self._dialect)
        present = [family for family, names in _MARKERS.items() if any(header_values(headers, name) for name in names)]
        if len(present) > 1:
            raise ConveyError("mixed_families", Family.NGINX)  # nginx may be asking: answer in its terms
        return present[0] if present else Family.ENVOY

    def _traefik(self, headers: Headers) -> Asked:
        family = Family.TRAEFIK
        method = _one(headers, _TRAEFIK_METHOD, family)
        uri = _one(headers, _TRAEFIK_URI, family)
        if method is None or uri is None:
            raise ConveyError("partial_family", family)
        host = _one(headers, _TRAEFIK_HOST, family)
        if host is not None and "," in host:
            raise ConveyError("repeated_header", family)  # a list of hosts: a proxy chain appended one
        return Asked.from_target(_method(method, family), host, _origin_form(uri, family), headers)

    def _nginx(self, check_host: str | None, headers: Headers) -> Asked:
        family = Family.NGINX
        method = _one(headers, _NGINX_METHOD, family)
        uri = _one(headers, _NGINX_URI, family)
        url = _one(headers, _NGINX_URL, family)
        if method is None or (uri is None and url is None):
            raise ConveyError("partial_family", family)  # auth_request is always a GET: the method must be sent
        host = check_host
        if url is not None:
            match = _ABSOLUTE.fullmatch(url)
            if match is None:
                raise ConveyError("bad_original_url", family)
            host = match.group(1)
            url_target = match.group(2) or "/"
            if uri is not None and uri != url_target:
                raise ConveyError("uri_url_mismatch", family)
            uri = url_target
        assert uri is not None
        return Asked.from_target(_method(method, family), host, _origin_form(uri, family), headers)

    def _envoy(self, method: str, target: str, host: str | None, headers: Headers) -> Asked:
        prefix = self._prefix
        if prefix:
            if not target.startswith(prefix) or target[len(prefix) : len(prefix) + 1] != "/":
                raise ConveyError("outside_prefix", Family.ENVOY, Decision.NO_ROUTE)
            target = target[len(prefix) :]
        return Asked.from_target(method, host, _origin_form(target, Family.ENVOY), headers)

    # --- the answer -----------------------------------------------------------------

    def allowed(self, family: Family, claim_headers: list[tuple[str, str]], request_id: str) -> list[tuple[str, str]]:
        """The headers of the allowed answer, exactly 200 with an empty body: the claim headers for
        the proxy to copy upstream, and X-Request-Id."""
        headers = [*claim_headers, ("X-Request-Id", request_id), SERVER_HEADER, ("Content-Length", "0")]
        if family is Family.ENVOY and self._claim_names:
            named = {name.lower() for name, _ in claim_headers}
            unset = [name for name in self._claim_names if name.lower() not in named]
            if unset:
                headers.append((_ENVOY_REMOVE, ",".join(unset)))
        return headers

    def refused(
        self, family: Family | None, decision: Decision, request_id: str, reason: Reason | None = None,
        dpop: DpopChallenge | None = None,
    ) -> LocalReply:
        """The proxy port's reply for `decision`, with the nginx family's status mapping."""
        local = reply(decision, request_id, reason, dpop)
        if family is Family.NGINX and local.status in _NGINX_STATUS:
            return local.with_status(_NGINX_STATUS[local.status])
        return local

