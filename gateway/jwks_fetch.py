"""Read JWK Set documents from where the config says they live: HTTP(S), OpenID Connect discovery, or a file.

This is the one module that does key I/O. It returns parsed JSON objects and
never interprets keys (that is `gateway.jose.jwk`) nor schedules anything (that
is `gateway.keystore`). Every failure is a `FetchError` whose `result` belongs
to the closed set `FetchResult`, which is also the `result` label of
`gateway_jwks_refresh_total`; messages are safe: they never hold a response
body, a key, or URL credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import aiohttp
from yarl import URL

from gateway.config.model import JwksConfig

# A JWK Set of a few dozen RSA keys is ~30 KiB; 512 KiB leaves room for
# certificate chains (x5c) while bounding what a hostile endpoint can make us
# buffer and parse (STYLE principle 9: sizes are capped before parsing).
MAX_DOCUMENT_BYTES: Final = 512 * 1024
WELL_KNOWN_SUFFIX: Final = "/.well-known/openid-configuration"
# Redirects are followed by hand so every hop passes the same scheme check.
MAX_REDIRECTS: Final = 3
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 16 * 1024
_ACCEPT_JWKS: Final = "application/jwk-set+json, application/json;q=0.9"
_ACCEPT_DISCOVERY: Final = "application/json"
_MAX_AGE_RE: Final = re.compile(r'(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)', re.IGNORECASE)


class FetchResult(StrEnum):
    """Outcome of one refresh attempt; values are stable metric labels."""

    OK = "ok"
    NOT_MODIFIED = "not_modified"  # 304: the set we hold is still current
    TIMEOUT = "timeout"  # no complete answer within JwksConfig.timeout
    UNREACHABLE = "unreachable"  # connection refused / reset, DNS, TLS
    REFUSED = "refused"  # we refused: plain http without allow_http, too many redirects
    HTTP_ERROR = "http_error"  # a status other than 200 / 304
    TOO_LARGE = "too_large"  # document over MAX_DOCUMENT_BYTES
    INVALID = "invalid"  # not UTF-8 JSON, not an object, not a JWK Set, bad discovery document
    EMPTY = "empty"  # a well-formed set with no usable key
    ISSUER_MISMATCH = "issuer_mismatch"  # discovery `issuer` differs from the configured one
    IO_ERROR = "io_error"  # a file source cannot be read


class FetchError(Exception):
    """A failed fetch: `result` is the machine code, the message a safe sentence."""

    __slots__ = ("message", "result")

    def __init__(self, result: FetchResult, message: str) -> None:
        super().__init__(f"{result}: {message}")
        self.result = result
        self.message = message


@dataclass(frozen=True, slots=True)
class Validators:
    """HTTP cache validators of the last accepted document (RFC 9110 §8.8)."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One answer: `document` is None exactly when the server said 304."""

    document: dict[str, Any] | None
    validators: Validators
    max_age: float | None  # Cache-Control max-age in seconds, if sent

    @property
    def not_modified(self) -> bool:
        return self.document is None


def parse_max_age(cache_control: str | None) -> float | None:
    """The max-age directive of a Cache-Control value (RFC 9111 §5.2.2.1), or None.

    `no-store` / `no-cache` yield 0 so the caller clamps to its minimum interval
    rather than keeping a document the server asked us not to keep.
    """
    if not cache_control:
        return None
    directives = {d.strip().split("=", 1)[0].lower() for d in cache_control.split(",")}
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    match = _MAX_AGE_RE.search(cache_control)
    return float(match.group(1)) if match else None


def discovery_url(location: str) -> str:
    """The OpenID configuration URL for a `discovery` location (OIDC Discovery §4).

    Both "https://idp/" and "https://idp" become "https://idp/.well-known/openid-configuration";
    a location that already names the document is kept as it is.
    """
    base = location.rstrip("/")
    if base.endswith(WELL_KNOWN_SUFFIX):
        return base
    return base + WELL_KNOWN_SUFFIX


def check_scheme(url: str, *, allow_http: bool, what: str) -> URL:
    """Parse `url`, refusing anything but https (or http when allowed)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise FetchError(FetchResult.INVALID, f"the {what} is not a valid URL") from exc
    scheme = parsed.scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        if not parsed.host:
            raise FetchError(FetchResult.INVALID, f"the {what} has no host")
        return parsed
    if scheme == "http":
        raise FetchError(FetchResult.REFUSED, f"the {what} uses plain http and allow_http is false")
    raise FetchError(FetchResult.REFUSED, f"the {what} scheme is not http(s)")


def _safe(url: URL) -> str:
    # Userinfo may hold credentials; the query may hold tokens. Neither is logged.
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate member names make a document ambiguous (RFC 8259 §4): reject.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate member name")
        obj[key] = value
    return obj


def parse_json_object(raw: bytes, *, what: str) -> dict[str, Any]:
    """Strict UTF-8 JSON that must be an object; FetchError("invalid") otherwise."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FetchError(FetchResult.INVALID, f"the {what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise FetchError(FetchResult.INVALID, f"the {what} is not a JSON object")
    return value


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
    # Content-Length is only a hint (it may be absent or lie), so the body is
    # also counted as it streams and the read stops one chunk past the cap.
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FetchError(FetchResult.TOO_LARGE, f"the {what} is larger than {max_bytes} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise FetchError(FetchResult.TOO_LARGE, f"the {what} is larger than {max_bytes} bytes")
    return bytes(buf)


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    allow_http: bool,
    validators: Validators | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    what: str = "JWKS document",
    accept: str = _ACCEPT_JWKS,
) -> Fetched:
    """GET one JSON object with a total deadline, a size cap and conditional headers.

    Raises FetchError; never returns a partial or non-object document.
    """
    target = check_scheme(url, allow_http=allow_http, what=f"{what} URL")
    headers = {"Accept": accept}
    if validators is not None:
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
    try:
        # One deadline for connect, redirects and the whole body: a server
        # dribbling bytes cannot hold a refresh open past `timeout`.
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(
                    target,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    if resp.status in _REDIRECT_STATUSES and "Location" in resp.headers:
                        target = check_scheme(
                            str(target.join(URL(resp.headers["Location"]))),
                            allow_http=allow_http,
                            what=f"{what} redirect",
                        )
                        continue
                    return await _answer(resp, max_bytes, what, conditional=len(headers) > 1)
            raise FetchError(FetchResult.REFUSED, f"more than {MAX_REDIRECTS} redirects for the {what}")
    except TimeoutError as exc:
        raise FetchError(FetchResult.TIMEOUT, f"the {what} did not arrive within {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        # The exception text may echo the URL; keep only the class name.
        raise FetchError(
            FetchResult.UNREACHABLE, f"cannot fetch the {what} from {_safe(target)} ({type(exc).__name__})"
        ) from exc


async def _answer(resp: aiohttp.ClientResponse, max_bytes: int, what: str, *, conditional: bool) -> Fetched:
    max_age = parse_max_age(resp.headers.get("Cache-Control"))
    # A 304 to an unconditional request would leave us with no document at all.
    if resp.status == 304 and conditional:
        return Fetched(None, Validators(), max_age)
    if resp.status != 200:
        # The body of an error page is not ours to log.
        raise FetchError(FetchResult.HTTP_ERROR, f"HTTP status {resp.status} for the {what}")
    raw = await _read_capped(resp, max_bytes, what)
    document = parse_json_object(raw, what=what)
    validators = Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
    return Fetched(document, validators, max_age)


class RemoteSource:
    """A `uri` or `discovery` JWKS source: remembers validators and the resolved jwks_uri.

    Not safe for concurrent `fetch` calls; the key store single-flights them.
    """

    def __init__(self, config: JwksConfig, issuer: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        if config.kind not in ("uri", "discovery") or not config.location:
            raise ValueError("RemoteSource needs a uri or discovery JwksConfig with a location")
        self._config = config
        self._issuer = issuer
        self._max_bytes = max_bytes
        self._jwks_uri: str | None = config.location if config.kind == "uri" else None
        self._answered_by: str | None = None
        # Validators belong to the URL that answered with them.
        self._validators: tuple[str, Validators] | None = None

    @property
    def jwks_uri(self) -> str | None:
        """The JWKS URL in use (resolved through discovery when needed)."""
        return self._jwks_uri

    async def fetch(self, session: aiohttp.ClientSession) -> Fetched:
        """Fetch the JWK Set, conditionally when a document was accepted before."""
        try:
            jwks_uri = self._jwks_uri or await self._resolve(session)
            known = self._validators
            fetched = await fetch_json(
                session,
                jwks_uri,
                timeout=self._config.timeout,
                allow_http=self._config.allow_http,
                validators=known[1] if known is not None and known[0] == jwks_uri else None,
                max_bytes=self._max_bytes,
            )
            self._answered_by = jwks_uri
            return fetched
        except FetchError:
            if self._config.kind == "discovery":
                # The IdP may have moved its jwks_uri: ask discovery again next time.
                self._jwks_uri = None
            raise

    @property
    def etag(self) -> str | None:
        """The ETag of the document currently held, if its server sent one."""
        return self._validators[1].etag if self._validators is not None else None

    def accept(self, fetched: Fetched) -> None:
        """Remember validators of a document the caller parsed and now holds.

        Only then may a later 304 stand for "your keys are current"; a
        document we rejected must be fetched in full again.
        """
        if fetched.document is not None and self._answered_by is not None:
            v = fetched.validators
            self._validators = (self._answered_by, v) if (v.etag or v.last_modified) else None

    def forget(self) -> None:
        """Drop validators so the next fetch is unconditional."""
        self._validators = None

    async def _resolve(self, session: aiohttp.ClientSession) -> str:
        assert self._config.location is not None
        fetched = await fetch_json(
            session,
            discovery_url(self._config.location),
            timeout=self._config.timeout,
            allow_http=self._config.allow_http,
            max_bytes=self._max_bytes,
            what="discovery document",
            accept=_ACCEPT_DISCOVERY,
        )
        assert fetched.document is not None  # no validators were sent, and then 304 is an http_error
        jwks_uri = jwks_uri_from_discovery(fetched.document, self._issuer, allow_http=self._config.allow_http)
        self._jwks_uri = jwks_uri
        return jwks_uri


def jwks_uri_from_discovery(document: dict[str, Any], issuer: str, *, allow_http: bool) -> str:
    """The `jwks_uri` of an OpenID Provider configuration, after the checks that make it trustworthy."""
    # OIDC Discovery §4.3: the issuer in the document must be identical to the
    # one we trust; otherwise these keys belong to someone else.
    if document.get("issuer") != issuer:
        raise FetchError(FetchResult.ISSUER_MISMATCH, "the discovery document names a different issuer than configured")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise FetchError(FetchResult.INVALID, "the discovery document has no jwks_uri string")
    check_scheme(jwks_uri, allow_http=allow_http, what="jwks_uri")
    return jwks_uri


StatSignature = tuple[int, int, int]


def stat_signature(path: str) -> StatSignature | None:
    """(st_mtime_ns, st_size, st_ino) of `path` following symlinks, or None if it cannot be stat'ed.

    Following links matters: a Kubernetes ConfigMap update swaps the `..data`
    symlink, so the link path keeps its own mtime while the target changes.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileSource:
    """A JWK Set file that is re-read only when its stat signature changes."""

    def __init__(self, path: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._seen: StatSignature | None = None
        self._seen_any = False

    def changed(self) -> bool:
        """True when the file differs from the last read (or has never been read): one stat call."""
        return not self._seen_any or stat_signature(self.path) != self._seen

    def read(self) -> dict[str, Any]:
        """Read and parse the file; the signature is recorded even when the content is bad.

        Recording on failure means a broken file is reported once, not on
        every poll, and is retried as soon as it changes again.
        """
        self._seen_any = True
        self._seen = stat_signature(self.path)
        try:
            with open(self.path, "rb") as fh:
                # fstat of the open file: the signature then belongs to exactly
                # the bytes we read, even if the path is swapped meanwhile.
                st = os.fstat(fh.fileno())
                self._seen = (st.st_mtime_ns, st.st_size, st.st_ino)
                raw = fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise FetchError(
                FetchResult.IO_ERROR, f"cannot read the JWKS file ({type(exc).__name__}: {exc.strerror})"
            ) from exc
        if len(raw) > self._max_bytes:
            raise FetchError(FetchResult.TOO_LARGE, f"the JWKS file is larger than {self._max_bytes} bytes")
        return parse_json_object(raw, what="JWKS file")
