"""Hold every issuer's current key set and keep it fresh without ever dropping good keys.

The lifecycle follows STYLE principle 7 (after Envoy's jwks_async_fetcher):

* `KeyStore.start()` returns at once. Inline sets and HS secrets are ready
  immediately, files are read synchronously, remote sets are fetched by
  background tasks, so a slow IdP never delays the listeners.
* Remote sets refresh every `refresh_interval` (or the server's Cache-Control
  max-age clamped into [min_refresh_interval, refresh_interval]) with ±10%
  jitter; files are re-read when their stat signature changes. The first
  refresh after a start or reload comes at a uniformly random point of the
  interval: a fleet restarted at once would otherwise refresh inside one ±10%
  band, cycle after cycle (bench/fleet.py: the IdP's peak several times its mean).
* A failed fetch keeps the last good set. An empty or all-invalid set is a
  failure too: a broken IdP must not be able to empty our key set. Failures
  back off exponentially. With no set yet, from 1s doubling, capped at
  min(refresh_interval, 60s): readiness is at stake, and this is how an issuer
  with no keys at all recovers on its own. While a stale set is served, from a
  quarter of refresh_interval (at least min_refresh_interval) doubling, capped at
  refresh_interval: an IdP that is down gets about two requests per interval from
  each sidecar instead of one, not one a minute; new kids still refetch at once.
* An unknown `kid` triggers `refetch_unknown_kid()`: single-flight (every
  concurrent caller awaits the same fetch) and at most one per
  `min_refresh_interval`, measured on the injected monotonic clock.

The JOSE core (`gateway.jose.jwk`) turns documents into keys; `gateway.jwks_fetch`
does all I/O; this module only decides when, and what to keep.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from gateway.config.model import IssuerConfig
from gateway.jwks_fetch import FetchError, FetchResult, FileSource, RemoteSource

if TYPE_CHECKING:
    from gateway.jose.jwk import Jwk, KeySet

log = logging.getLogger("gateway.keys")

DEFAULT_FILE_POLL_INTERVAL = 1.0
BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 60.0
JITTER = 0.10
STALE_BACKOFF_FRACTION = 0.25  # a stale set's first retry: this share of refresh_interval
MIN_DELAY = 0.01


class ParseSet(Protocol):
    """The shape of `gateway.jose.jwk.parse_jwk_set`."""

    def __call__(self, obj: Any, /, *, allow_oct: bool = ...) -> tuple[KeySet, tuple[str, ...]]: ...


HmacSet = Callable[[bytes], "KeySet"]
Listener = Callable[["KeySet | None", "KeySet"], None]


class KeyEventSink(Protocol):
    """What the key store reports to: the metrics module is one."""

    def refresh(self, issuer: str, result: str) -> None: ...

    def keys_loaded(self, issuer: str, count: int) -> None: ...

    def key_skipped(self, issuer: str, message: str) -> None: ...


class KeyEvents:
    """A KeyEventSink whose every method is a no-op: the default, and a base for test recorders."""

    def refresh(self, issuer: str, result: str) -> None:
        """One load attempt finished: "ok", "not_modified" or a FetchResult failure label."""

    def keys_loaded(self, issuer: str, count: int) -> None:
        """The issuer's current set changed and now holds `count` keys."""

    def key_skipped(self, issuer: str, message: str) -> None:
        """A key in a set was unusable and skipped; `message` is a safe sentence."""


def _default_parse_set() -> ParseSet:
    # Imported late so this module loads even where the JOSE core is absent
    # (tests inject a parser) and so import order stays one-way.
    from gateway.jose.jwk import parse_jwk_set

    return parse_jwk_set


def _default_hmac_set(secret: bytes) -> KeySet:
    from gateway.jose.jwk import KeySet, hmac_key

    return KeySet([hmac_key(secret)])


def _source_identity(config: IssuerConfig) -> tuple[Any, ...] | None:
    """What decides which keys a source yields; timing knobs (intervals, timeout) do not."""
    jwks = config.jwks
    if jwks is None:
        return None
    # The issuer matters for discovery, whose document must name it.
    return (jwks.kind, jwks.location, jwks.inline, jwks.allow_http, config.issuer)


@dataclass(frozen=True, slots=True)
class _Deps:
    """What the store shares with each IssuerKeys: injected I/O, time and observers."""

    events: KeyEventSink
    clock: Callable[[], float]
    wall_clock: Callable[[], float]  # epoch seconds, for what the admin port shows
    random: Callable[[], float]
    parse_set: ParseSet
    spawn: Callable[[Any], asyncio.Task[Any]]
    session: Callable[[], aiohttp.ClientSession]
    file_poll_interval: float


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A snapshot of one issuer's keys, for the admin port (times are epoch seconds)."""

    issuer: str
    source: str | None  # file | uri | discovery | inline; None when the issuer has only a secret
    location: str | None  # the file path, uri or discovery URL
    jwks_uri: str | None  # discovery: the jwks_uri in use
    secret: bool  # an HS* secret is configured (never shown)
    ready: bool
    keys: tuple[dict[str, str | None], ...]  # each JWKS key's kid, kty, alg, crv, use
    skipped: tuple[str, ...]  # why keys of the set were not loaded (safe sentences)
    last_load: tuple[float, str] | None  # (when, FetchResult) of the last load attempt
    next_load: float | None  # next scheduled refresh (remote) or check (file)
    etag: str | None


def describe_key(key: Jwk) -> dict[str, str | None]:
    """What may be shown of a key: its identity and type, never its material."""
    return {"kid": key.kid, "kty": key.kty, "alg": key.alg, "crv": key.crv, "use": key.use}


class IssuerKeys:
    """The key set of one issuer and the policy that keeps it current."""

    def __init__(self, config: IssuerConfig, deps: _Deps, hmac_set: HmacSet) -> None:
        self.config = config
        self.name = config.name
        self._deps = deps
        self._hmac: KeySet | None = None
        self._secret_unusable = False
        if config.secret is not None:
            try:
                self._hmac = hmac_set(config.secret.reveal())
            except Exception as exc:
                # Config validation should have caught it; if not, the issuer stays
                # unready (503, named by /readyz) rather than silently losing HS*.
                self._secret_unusable = True
                log.error("issuer secret unusable", extra={"issuer": self.name, "error": type(exc).__name__})
        self._jwks: KeySet | None = None  # last good set from the JWKS source
        self._keys: KeySet | None = None  # what callers see: JWKS set merged with the HS secret
        self._document: Any = None  # the document `_jwks` came from, to skip re-parsing an unchanged one
        self._skipped: tuple[str, ...] = ()
        self._listeners: list[Listener] = []
        self._failures = 0
        self._max_age: float | None = None
        self._inflight: asyncio.Task[FetchResult] | None = None
        self._last_refetch: float | None = None
        self._closed = False
        self._last_load: tuple[float, str] | None = None  # (epoch seconds, FetchResult) of the last attempt
        self._next_load: float | None = None  # epoch seconds of the next scheduled refresh or file check
        jwks = config.jwks
        self._source: RemoteSource | FileSource | None = None
        if jwks is not None and jwks.kind in ("uri", "discovery"):
            self._source = RemoteSource(jwks, config.issuer)
        elif jwks is not None and jwks.kind == "file" and jwks.location:
            self._source = FileSource(jwks.location)
        self._recompute()

    # -- what the request path reads -------------------------------------------------

    @property
    def keys(self) -> KeySet | None:
        """The current set, or None while a configured JWKS source has never loaded (-> 503)."""
        return self._keys

    @property
    def ready(self) -> bool:
        return self._keys is not None

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(old, new)` whenever the current set is replaced."""
        self._listeners.append(callback)

    async def refetch_unknown_kid(self) -> KeySet | None:
        """Try to learn a key the token names but the set lacks; return the (possibly new) set.

        Concurrent callers share one fetch; beyond that, at most one fetch per
        min_refresh_interval, so a flood of tokens with made-up kids costs the
        IdP at most one request per interval: the work an attacker can cause is bounded.
        """
        source = self._source
        if self._closed or source is None:
            return self._keys
        if isinstance(source, FileSource):
            # A stat is cheap: a rotated file is picked up before the next poll.
            self._poll_file()
            return self._keys
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
            return self._keys
        assert self.config.jwks is not None
        now = self._deps.clock()
        if self._last_refetch is not None and now - self._last_refetch < self.config.jwks.min_refresh_interval:
            return self._keys
        self._last_refetch = now
        # shield: a client that disconnects must not cancel the fetch others await.
        await asyncio.shield(self._fetch_once())
        return self._keys

    def status(self) -> KeyStatus:
        """What the admin port shows of this issuer's keys: where they come from, which are held, and when
        they were last and will next be loaded. Key metadata only, never key material."""
        jwks = self.config.jwks
        source = self._source
        return KeyStatus(
            issuer=self.name,
            source=None if jwks is None else jwks.kind,
            location=None if jwks is None or jwks.kind == "inline" else jwks.location,
            jwks_uri=source.jwks_uri if isinstance(source, RemoteSource) else None,
            secret=self.config.secret is not None,
            ready=self.ready,
            keys=tuple(describe_key(k) for k in self._jwks.keys) if self._jwks is not None else (),
            skipped=self._skipped,
            last_load=self._last_load,
            next_load=self._next_load if isinstance(source, (RemoteSource, FileSource)) else None,
            etag=source.etag if isinstance(source, RemoteSource) else None,
        )

    # -- lifecycle, driven by KeyStore -----------------------------------------------

    def adopt(self, old: IssuerKeys) -> bool:
        """Take over `old`'s JWKS set if it comes from the same source; True if taken."""
        if (
            _source_identity(old.config) != _source_identity(self.config)
            or old._jwks is None
            or self._jwks is not None
        ):
            return False
        self._jwks, self._document, self._skipped = old._jwks, old._document, old._skipped
        self._max_age, self._last_load = old._max_age, old._last_load
        self._recompute()
        return True

    def load_local(self) -> None:
        """Load what needs no network: the inline set or the file (synchronously)."""
        jwks = self.config.jwks
        if jwks is None:
            return
        if jwks.kind == "inline":
            try:
                self._accept_document(dict(jwks.inline or {}))
                result = FetchResult.OK
            except FetchError as exc:
                result = self._failed(exc)
            self._report(result)
        elif isinstance(self._source, FileSource):
            self._load_file()

    async def run(self) -> None:
        """Background loop for sources that change: refresh a remote set, or poll a file."""
        if isinstance(self._source, RemoteSource):
            await self._run_remote()
        elif isinstance(self._source, FileSource):
            await self._run_file()

    def close(self) -> None:
        self._closed = True
        if self._inflight is not None:
            self._inflight.cancel()

    # -- remote ------------------------------------------------------------------------

    async def _run_remote(self) -> None:
        # Keys adopted from the previous config are fresh enough: no fetch storm on reload.
        first = True
        if self._jwks is not None:
            await self._sleep_until_next(self._next_delay(FetchResult.OK, first=True))
            first = False
        while True:
            result = await asyncio.shield(self._fetch_once())
            ok = result in (FetchResult.OK, FetchResult.NOT_MODIFIED)
            await self._sleep_until_next(self._next_delay(result, first=first and ok))
            first = first and not ok

    def _fetch_once(self) -> asyncio.Task[FetchResult]:
        """The fetch in flight, or a new one: the single point of single-flight."""
        if self._inflight is None or self._inflight.done():
            self._inflight = self._deps.spawn(self._attempt_remote())
        return self._inflight

    async def _attempt_remote(self) -> FetchResult:
        source = self._source
        assert isinstance(source, RemoteSource)
        try:
            try:
                fetched = await source.fetch(self._deps.session())
                if fetched.document is None:
                    if self._jwks is None:
                        # Cannot happen with our own validators, but a 304 must never
                        # stand in for a set we do not hold.
                        source.forget()
                        raise FetchError(FetchResult.HTTP_ERROR, "HTTP 304 while no key set is held")
                    result = FetchResult.NOT_MODIFIED
                else:
                    self._accept_document(fetched.document)
                    source.accept(fetched)
                    result = FetchResult.OK
                self._max_age = fetched.max_age
                self._failures = 0
            except FetchError as exc:
                result = self._failed(exc)
        except Exception:
            # A bug here must not end the refresh loop or leak into the request path.
            log.exception("jwks refresh crashed", extra={"issuer": self.name})
            self._failures += 1
            result = FetchResult.INVALID
        self._report(result)
        return result

    def _next_delay(self, result: FetchResult, *, first: bool = False) -> float:
        """Seconds until the next fetch; `first` for the first refresh of a loaded set (its phase)."""
        jwks = self.config.jwks
        assert jwks is not None
        low = min(jwks.min_refresh_interval, jwks.refresh_interval)
        if result in (FetchResult.OK, FetchResult.NOT_MODIFIED):
            delay = jwks.refresh_interval
            if self._max_age is not None:
                delay = min(max(self._max_age, low), jwks.refresh_interval)
            if first:
                # A random phase, once: later ±10% jitter keeps the fleet spread.
                return max(MIN_DELAY, delay * self._deps.random())
        elif self._jwks is None:
            # The exponent is bounded so a long outage cannot overflow the float.
            delay = min(BACKOFF_INITIAL * 2.0 ** min(self._failures - 1, 30), min(jwks.refresh_interval, BACKOFF_CAP))
        else:
            first_retry = max(low, jwks.refresh_interval * STALE_BACKOFF_FRACTION)
            delay = min(first_retry * 2.0 ** min(self._failures - 1, 30), jwks.refresh_interval)
        # Jitter keeps sidecars that drifted apart from falling back into step;
        # the floor keeps a zero interval from turning into a busy loop.
        return max(MIN_DELAY, delay * (1.0 - JITTER + 2 * JITTER * self._deps.random()))

    # -- file ----------------------------------------------------------------------------

    async def _run_file(self) -> None:
        while True:
            await self._sleep_until_next(self._deps.file_poll_interval)
            self._poll_file()

    def _poll_file(self) -> None:
        source = self._source
        assert isinstance(source, FileSource)
        if source.changed():
            self._load_file()

    def _load_file(self) -> None:
        source = self._source
        assert isinstance(source, FileSource)
        try:
            self._accept_document(source.read())
            self._failures = 0
            result = FetchResult.OK
        except FetchError as exc:
            result = self._failed(exc)
        self._report(result)

    # -- shared ------------------------------------------------------------------------

    def _accept_document(self, document: Any) -> None:
        """Parse and install a JWK Set document; raise FetchError (keeping the old set) if unusable."""
        if self._jwks is not None and document == self._document:
            return
        try:
            key_set, skipped = self._deps.parse_set(document, allow_oct=False)
        except Exception as exc:
            # The JOSE core's errors carry safe sentences (no key material).
            raise FetchError(FetchResult.INVALID, f"not a usable JWK Set: {str(exc)[:200]}") from exc
        if skipped != self._skipped:
            # Logged when the set of skipped keys changes, not on every refresh.
            for message in skipped:
                log.warning("jwks key skipped", extra={"issuer": self.name, "error": message})
                self._emit("key_skipped", self.name, message)
            self._skipped = skipped
        if len(key_set) == 0:
            raise FetchError(FetchResult.EMPTY, "the JWK Set holds no usable key")
        self._jwks, self._document = key_set, document
        self._recompute()

    def _recompute(self) -> None:
        old = self._keys
        new: KeySet | None
        if self._secret_unusable or (self.config.jwks is not None and self._jwks is None):
            new = None  # part of the issuer's keys is missing: not ready
        elif self._jwks is None:
            new = self._hmac
        elif self._hmac is None:
            new = self._jwks
        else:
            new = self._jwks.merged(self._hmac)
        if new is old:
            return
        self._keys = new
        if new is None:
            return
        log.info("jwks keys loaded", extra={"issuer": self.name, "keys": len(new)})
        self._emit("keys_loaded", self.name, len(new))
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("key-set listener failed", extra={"issuer": self.name})

    def _failed(self, exc: FetchError) -> FetchResult:
        self._failures += 1
        log.warning(
            "jwks refresh failed",
            extra={"issuer": self.name, "result": str(exc.result), "error": exc.message, "kept_previous": self._jwks is not None},
        )
        return exc.result

    def _report(self, result: FetchResult) -> None:
        self._last_load = (self._deps.wall_clock(), str(result))
        self._emit("refresh", self.name, str(result))

    def _sleep_until_next(self, delay: float) -> Awaitable[None]:
        self._next_load = self._deps.wall_clock() + delay
        return asyncio.sleep(delay)

    def _emit(self, method: str, *args: Any) -> None:
        # An observer's bug must not break key loading.
        try:
            getattr(self._deps.events, method)(*args)
        except Exception:
            log.exception("key event observer failed", extra={"observer": method})


class KeyStore:
    """All issuers' keys for one configuration; built per config, adopting keys across reloads."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        session: aiohttp.ClientSession | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        events: KeyEventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        parse_set: ParseSet | None = None,
        hmac_set: HmacSet | None = None,
        file_poll_interval: float = DEFAULT_FILE_POLL_INTERVAL,
        adopt_from: KeyStore | None = None,
    ) -> None:
        self._session = session
        self._owns_session = False
        self._session_factory = session_factory
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        deps = _Deps(
            events=events or KeyEvents(),
            clock=clock,
            wall_clock=wall_clock,
            random=random,
            parse_set=parse_set or _default_parse_set(),
            spawn=self._spawn,
            session=self._get_session,
            file_poll_interval=file_poll_interval,
        )
        self._issuers: dict[str, IssuerKeys] = {}
        for cfg in issuers:
            self._issuers[cfg.name] = IssuerKeys(cfg, deps, hmac_set or _default_hmac_set)
        if adopt_from is not None:
            self.adopt(adopt_from)

    def adopt(self, old: KeyStore) -> list[str]:
        """Take the current keys of issuers whose key source did not change; call before start().

        A reload then keeps the gateway ready instead of waiting on the IdP again.
        Returns the names of the issuers that adopted keys.
        """
        taken = []
        for name, mine in self._issuers.items():
            theirs = old._issuers.get(name)
            if theirs is not None and mine.adopt(theirs):
                taken.append(name)
        return taken

    async def start(self, *, remote: bool = True) -> None:
        """Load local keys and start background refresh; returns without waiting for any IdP.

        remote=False (gateway explain --offline) loads file and inline sets only, once.
        """
        if self._started:
            return
        self._started = True
        for issuer in self._issuers.values():
            issuer.load_local()
        if not remote:
            return
        for issuer in self._issuers.values():
            if issuer.config.jwks is not None and issuer.config.jwks.kind in ("uri", "discovery", "file"):
                self._spawn(issuer.run())

    def get(self, issuer_name: str) -> IssuerKeys:
        """The named issuer's keys; KeyError for a name not in the config."""
        return self._issuers[issuer_name]

    def __iter__(self) -> Iterator[IssuerKeys]:
        return iter(self._issuers.values())

    def missing(self) -> list[str]:
        """Names of issuers with no key set yet, in config order (the /readyz body)."""
        return [name for name, issuer in self._issuers.items() if not issuer.ready]

    async def close(self) -> None:
        """Cancel every background task and close the HTTP session if this store created it."""
        for issuer in self._issuers.values():
            issuer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._owns_session = False

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, and only if some issuer is remote.
        if self._session is None:
            self._session = self._session_factory()
            self._owns_session = True
        return self._session
