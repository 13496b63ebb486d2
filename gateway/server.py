"""The process: uvloop, proxy, authz and admin listeners, reload on SIGHUP or file change, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import ssl
from typing import Any

from aiohttp import web

from gateway.access_log import AccessLog, Listener
from gateway.admin import Admin
from gateway.authn import Authenticator
from gateway.config.load import ConfigInvalid, load_config
from gateway.config.model import GatewayConfig, Listen
from gateway.decryption_keys import DecryptionKeyStore
from gateway.dpop_state import DpopShared
from gateway.edge import Edge, Handler, Limits
from gateway.handler import Gateway
from gateway.http1 import Http1Connection
from gateway.http2 import Negotiate
from gateway.keystore import KeyStore
from gateway.local_reply import Decision
from gateway.metrics import Metrics
from gateway.process_log import set_log_level
from gateway.runtime import Runtime, build_runtime
from gateway.tls import ServerTls, TlsFileError
from gateway.token_cache import TokenCache

log = logging.getLogger("gateway")
CONFIG_POLL_SECONDS = 1.0
WORKER_JOIN_TIMEOUT = 10.0


def _listen_socket_host(listen: Listen) -> str:
    return listen.host.strip("[]")


class GatewayProcess:
    """One running gateway: built from a config, reloadable, stoppable. Tests run it in-process too."""

    def __init__(
        self, config: GatewayConfig, config_path: str | None = None, dpop_shared: DpopShared | None = None
    ) -> None:
        self.config_path = config_path
        # Made before the workers fork when there are several, so all of them share it.
        self.dpop_shared = dpop_shared or DpopShared.create()
        self.metrics = Metrics()
        self.access_log = AccessLog()
        self.keystore = self._new_keystore(config, None)
        self.authn = Authenticator(
            TokenCache(config.cache.max_entries, config.cache.ttl), self.metrics, others_in_flight=self._others_in_flight
        )
        self.decryption = self._new_decryption(config)
        runtime = build_runtime(config, self.keystore, decryption=self.decryption, dpop_shared=self.dpop_shared)
        self.gateway = Gateway(runtime, self.authn, self.metrics, self.access_log)
        # TLS on the proxy port is decided at start; its files and settings follow reloads.
        self.tls = (
            ServerTls(config.server.tls, self.metrics, alpn=("h2", "http/1.1") if config.server.http2 else ())
            if config.server.tls is not None
            else None
        )
        self._listeners: list[tuple[asyncio.AbstractServer, Edge]] = []  # proxy, then authz when on
        self._admin_runner: web.ServerRunner | None = None
        self.proxy_port = 0
        self.authz_port = 0  # 0 while decision mode is off
        self.admin_port = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._config_stamp = _stamp(config_path)
        self._reload_lock = asyncio.Lock()
        self.stopped = asyncio.Event()

    @property
    def runtime(self) -> Runtime:
        return self.gateway.runtime

    def _new_keystore(self, config: GatewayConfig, old: KeyStore | None) -> KeyStore:
        keystore = KeyStore(config.issuers, events=self.metrics, adopt_from=old)
        for issuer in keystore:
            name = issuer.config.name

            def on_change(old_set: Any, new_set: Any, name: str = name) -> None:
                # A key that left its issuer's set stops working now, cached tokens included.
                self.authn.cache.drop_removed_keys(name, old_set, new_set)

            issuer.add_listener(on_change)
        return keystore

    def _new_decryption(self, config: GatewayConfig) -> DecryptionKeyStore | None:
        if config.decryption is None:
            return None
        store = DecryptionKeyStore(config.decryption)
        # New keys (a Secret update): verdicts on JWEs are forgotten, so a removed key's tokens stop at once.
        def on_change(_keys: object) -> None:
            self.authn.cache.drop_encrypted()

        store.add_listener(on_change)
        return store

    async def start(self) -> None:
        cfg = self.runtime.config
        await self.keystore.start()
        if self.decryption is not None:
            self.decryption.start()
        shared = cfg.server.workers > 1  # workers share the ports; the kernel spreads connections
        if shared:
            # A worker joins the shared ports once it has keys, so a (re)started worker never
            # answers 503 while its siblings could serve; a single process listens at once.
            await self._await_keys(WORKER_JOIN_TIMEOUT)
        self.proxy_port = await self._listen(
            self.gateway.handle, Listener.PROXY, cfg.server.listen, shared,
            ssl_context=self.tls.listening if self.tls is not None else None,
        )
        if self.tls is not None:
            self.tls.start_watching()
        if cfg.server.authz_listen is not None:
            # Decision mode: the same request path, answering instead of forwarding.
            self.authz_port = await self._listen(
                self.gateway.handle_check, Listener.AUTHZ, cfg.server.authz_listen, shared
            )
        admin = web.Server(Admin(self.gateway).handle, access_log=None)
        self._admin_runner = web.ServerRunner(admin, shutdown_timeout=1.0)
        await self._admin_runner.setup()
        admin_site = web.TCPSite(
            self._admin_runner, _listen_socket_host(cfg.server.admin_listen), cfg.server.admin_listen.port,
            reuse_port=shared,
        )
        await admin_site.start()
        self.admin_port = bound_port(admin_site)
        if self.config_path is not None:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch_config())
        listening = {
            "proxy": str(Listen(cfg.server.listen.host, self.proxy_port)),
            "proxy_scheme": "https" if self.tls is not None else "http",
            "admin": str(Listen(cfg.server.admin_listen.host, self.admin_port)),
        }
        if cfg.server.authz_listen is not None:
            listening["authz"] = str(Listen(cfg.server.authz_listen.host, self.authz_port))
        log.info("listening", extra=listening)

    async def _listen(
        self, handler: Handler, listener: Listener, listen: Listen, shared: bool,
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        """One listener on our own HTTP/1.1 edge (its limits are read at start, like its address)."""
        cfg = self.runtime.config

        def record_refused(decision: Decision) -> None:
            self.gateway.record_unparsed(decision, listener)

        edge = Edge(handler, record_refused, _limits(cfg), self.metrics)
        edge.start()
        # server.http2: each connection's protocol is chosen by ALPN or its first bytes (http2.Negotiate).
        protocol = Negotiate if cfg.server.http2 and listener is Listener.PROXY else Http1Connection
        server = await asyncio.get_running_loop().create_server(
            lambda: protocol(edge), _listen_socket_host(listen), listen.port,
            reuse_port=shared or None, backlog=1024, ssl=ssl_context,
            # A TLS handshake is part of the request head's time: a client that stalls it is slowloris too.
            ssl_handshake_timeout=cfg.server.header_timeout if ssl_context is not None else None,
        )
        self._listeners.append((server, edge))
        return int(server.sockets[0].getsockname()[1])

    def _others_in_flight(self) -> bool:
        """More than one request admitted and not yet answered, on all ports together (a check then
        waits for its turn's batch; one request alone is not worth a loop turn of latency)."""
        return sum(edge.inflight for _, edge in self._listeners) > 1

    async def _await_keys(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.keystore.missing() and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def reload(self) -> bool:
        """Build a complete new runtime from the config file and swap it in; keep the old one on any error."""
        if self.config_path is None:
            return False
        async with self._reload_lock:
            self._config_stamp = _stamp(self.config_path)
            try:
                config = load_config(self.config_path)
            except ConfigInvalid as exc:
                self.metrics.config_reloads.labels("error").inc()
                log.error(
                    "config reload refused; the previous config keeps serving",
                    extra={"config": self.config_path, "issues": [i.as_dict() for i in exc.issues]},
                )
                return False
            old_runtime = self.runtime
            self._reload_tls(config)
            keystore = self._new_keystore(config, old_runtime.keystore)
            await keystore.start()
            decryption = self._new_decryption(config)
            if decryption is not None:
                decryption.start()
            runtime = build_runtime(
                config, keystore, previous=old_runtime, decryption=decryption, dpop_shared=self.dpop_shared
            )
            self.authn.cache.clear()  # cached verdicts were reached under the old issuer policies
            self.authn.cache.resize(config.cache.max_entries, config.cache.ttl)
            self.gateway.runtime = runtime  # requests already in flight finish on the old runtime
            if config.server.max_connections > old_runtime.config.server.max_connections:
                raise_open_file_limit(config.server.max_connections)
            limits = _limits(config)
            for _, edge in self._listeners:
                edge.apply(limits)
            self.keystore = keystore
            old_decryption, self.decryption = self.decryption, decryption
            self.metrics.config_reloads.labels("ok").inc()
            set_log_level(config.server.log_level)
            log.info(
                "config reloaded",
                extra={"config": self.config_path, "issuers": len(config.issuers), "routes": len(config.routes)},
            )
        await old_runtime.keystore.close()
        if old_decryption is not None:
            await old_decryption.close()
        if old_runtime.upstream is not runtime.upstream:
            asyncio.get_running_loop().call_later(
                config.server.shutdown_grace, lambda: asyncio.ensure_future(old_runtime.upstream.close())
            )
        return True

    def _reload_tls(self, config: GatewayConfig) -> None:
        new = config.server.tls
        if (self.tls is None) != (new is None):
            log.warning(
                "server.tls added or removed: that takes effect at the next restart",
                extra={"tls_now": self.tls is not None, "tls_in_config": new is not None},
            )
        elif self.tls is not None and new is not None:
            self.tls.update(new)  # a set that fails to load is counted and logged; the old one keeps serving

    async def _watch_config(self) -> None:
        # Polling stat() follows symlinks, so Kubernetes' ConfigMap `..data` swap shows as a change.
        assert self.config_path is not None
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            stamp = _stamp(self.config_path)
            if stamp != self._config_stamp and stamp is not None:
                await self.reload()

    async def stop(self) -> None:
        """Readiness 503 at once, stop accepting, drain in-flight requests up to shutdown_grace, close."""
        self.gateway.draining = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self.tls is not None:
            self.tls.stop_watching()
        # Both request ports stop accepting at once, then drain together.
        for server, _ in self._listeners:
            server.close()
        grace = self.runtime.config.server.shutdown_grace
        await asyncio.gather(*(edge.drain(grace) for _, edge in self._listeners))
        await self.runtime.upstream.close()
        await self.keystore.close()
        if self.decryption is not None:
            await self.decryption.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        self.access_log.flush()
        self.stopped.set()


def _limits(cfg: GatewayConfig) -> Limits:
    server = cfg.server
    return Limits(
        header_timeout=server.header_timeout,
        idle_timeout=server.idle_timeout,
        send_timeout=server.send_timeout,
        body_timeout=server.body_timeout,
        max_connections=server.max_connections,
        max_inflight=server.max_inflight,
        max_header_bytes=server.max_header_bytes,
    )


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def bound_port(site: web.TCPSite) -> int:
    """The port a started site listens on (it differs from the config's when that says 0)."""
    server: Any = site._server  # asyncio's or uvloop's Server: both have .sockets
    return int(server.sockets[0].getsockname()[1])


async def serve(config: GatewayConfig, config_path: str | None, dpop_shared: DpopShared | None = None) -> int:
    try:
        process = GatewayProcess(config, config_path, dpop_shared)
    except TlsFileError as exc:  # checked at load, but replaced since
        log.error("cannot serve TLS", extra={"key": f"server.tls.{exc.field}", "error": exc.message})
        return 1
    try:
        await process.start()
    except OSError as exc:  # a port in use, an address not on this host
        log.error("cannot listen", extra={"error": exc.strerror or type(exc).__name__})
        await process.stop()
        return 1
    # Everything built at start lives as long as the process: keep it out of every
    # collection, so a full collection's pause covers only what requests allocate.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_term() -> None:
        if not stopping:
            log.info("stopping: draining in-flight requests", extra={"grace_seconds": config.server.shutdown_grace})
            stopping.append(loop.create_task(process.stop()))

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(process.reload()) and None)
    await process.stopped.wait()
    log.info("stopped")
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency; plain asyncio still works
        log.warning("uvloop not available; using the default event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Beyond the client connections: upstream connections, key fetches, the config, logs.
FD_HEADROOM = 1024


def raise_open_file_limit(max_connections: int) -> int:
    """Lift the soft open-file limit toward what server.max_connections needs (up to the hard
    limit), so the limit that refuses connections is ours, counted, and not accept()'s EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "the open-file limit is below server.max_connections; accept() will fail first",
            extra={"open_file_limit": soft, "max_connections": max_connections},
        )
    return soft


def run_forever(config: GatewayConfig, config_path: str) -> int:
    """Serve `config` (read from `config_path`, which is watched for reloads) until SIGTERM."""
    set_log_level(config.server.log_level)
    raise_open_file_limit(config.server.max_connections)  # workers inherit it
    if config.server.workers == 1:
        _install_uvloop()
        return asyncio.run(serve(config, config_path))
    from gateway.metrics import MULTIPROC_ENV
    from gateway.supervisor import Supervisor

    # DPoP replay memory and nonce key: one for the whole process, inherited by every worker.
    dpop_shared = DpopShared.create()
    dpop_shared.replay.share_with_forks()
    supervisor = Supervisor(config.server.workers, lambda index: _run_worker(config, config_path, dpop_shared))
    os.environ[MULTIPROC_ENV] = supervisor.metrics_dir
    log.info("starting workers", extra={"workers": config.server.workers})
    return supervisor.run()


def _run_worker(config: GatewayConfig, config_path: str, dpop_shared: DpopShared) -> int:
    from gateway.metrics import use_multiprocess_values

    use_multiprocess_values(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    _install_uvloop()
    return asyncio.run(serve(config, config_path, dpop_shared))
