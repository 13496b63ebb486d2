"""The gateway's own JWE decryption keys: loaded at start, re-read when their file changes (a mounted Secret).

A file source is polled with one stat call per interval (symlinks followed, so a
Kubernetes Secret's `..data` swap is seen); a changed file that does not load as
a set of private keys is logged and the last good set keeps serving. An env
source cannot change while the process runs and is read once. Listeners hear
of every new set, so the verdict cache can forget tokens of a key that left.
The JOSE core (`gateway.jose.jwe_keys`) turns the document into keys; the file
reading is `gateway.jwks_fetch.FileSource`, shared with the JWKS files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping

from gateway.config.decryption import MAX_KEYS_FILE_BYTES
from gateway.config.model import DecryptionConfig
from gateway.jose.errors import DECRYPT_FAILED_DESCRIPTION, Reason, TokenError
from gateway.jose.jwe import JwePolicy, NestedJws, parse_jwe, unwrap_nested_jws
from gateway.jose.jwe_keys import DecryptionKeySet, parse_decryption_jwk_set
from gateway.jose.jwk import JwkError
from gateway.jwks_fetch import FetchError, FileSource

log = logging.getLogger("gateway.keys")

DEFAULT_POLL_INTERVAL = 1.0

Listener = Callable[[DecryptionKeySet], None]


class DecryptionKeyStore:
    """The current decryption key set and the policy (alg/enc allow-lists) it is used under."""

    def __init__(
        self,
        config: DecryptionConfig,
        *,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.config = config
        self.policy = JwePolicy(frozenset(config.algorithms), frozenset(config.encryption))
        self._environ = environ
        self._poll_interval = poll_interval
        self._file = FileSource(config.location, max_bytes=MAX_KEYS_FILE_BYTES) if config.kind == "file" else None
        self._keys: DecryptionKeySet | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def keys(self) -> DecryptionKeySet | None:
        return self._keys

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def describe(self) -> dict[str, object]:
        """For admin /keys: the source and each key's kid, type and algorithms; never key material."""
        keys = self._keys
        return {
            "source": self.config.kind,
            "algorithms": list(self.config.algorithms),
            "encryption": list(self.config.encryption),
            "keys": None if keys is None else [
                {"kid": k.kid, "kty": k.kty, "crv": k.crv, "algs": sorted(k.algs)} for k in keys.keys
            ],
        }

    def unwrap(self, token: str, *, max_bytes: int) -> NestedJws:
        """Decrypt a compact JWE to the compact JWS inside; raises `TokenError`."""
        keys = self._keys
        if keys is None:
            parse_jwe(token, max_bytes=max_bytes)  # structure faults are still `malformed`
            raise TokenError(Reason.DECRYPT_FAILED, DECRYPT_FAILED_DESCRIPTION)
        return unwrap_nested_jws(token, keys, self.policy, max_bytes=max_bytes)

    def load(self) -> bool:
        """Read the source now; keep the current set if it does not load. True when a new set was taken."""
        try:
            document = self._read()
            keys, _ = parse_decryption_jwk_set(document)
        except (FetchError, JwkError, ValueError) as exc:
            # The messages name a key by index and say what is wrong with it; never key material.
            log.error("decryption keys not loaded", extra={"source": self.config.kind, "error": str(exc)[:300]})
            return False
        self._keys = keys
        log.info("decryption keys loaded", extra={"source": self.config.kind, "keys": len(keys)})
        for listener in self._listeners:
            listener(keys)
        return True

    def poll(self) -> None:
        """One stat call; re-read the file if it changed."""
        if self._file is not None and self._file.changed():
            self.load()

    def start(self) -> None:
        """Load synchronously, then watch the file in the background (call inside the event loop)."""
        self.load()
        if self._file is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            self.poll()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _read(self) -> object:
        if self._file is not None:
            return self._file.read()
        environ = self._environ if self._environ is not None else os.environ
        text = environ.get(self.config.location)
        if not text:
            raise ValueError(f"environment variable {self.config.location} is not set or empty")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"environment variable {self.config.location} is not JSON") from exc
