"""Several workers (server.workers > 1): fork them, share the ports by SO_REUSEPORT, pass signals on, replace the dead.

Each worker is a whole gateway with its own event loop and key fetcher; the kernel
spreads connections across them. Metrics go to a shared directory so a scrape of
any worker's admin port sums them all. The supervisor itself runs no event loop: it
only waits for children and forwards SIGTERM, SIGINT and SIGHUP.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("gateway.supervisor")
RESPAWN_DELAY = 1.0  # a worker that dies at once is not restarted in a tight loop
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_FORWARDED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class Supervisor:
    def __init__(self, workers: int, run_worker: Callable[[int], int]) -> None:
        self._workers = workers
        self._run_worker = run_worker
        self._children: dict[int, int] = {}  # pid -> worker index
        self._stopping = False
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for index in range(self._workers):
            self._spawn(index)
        worst = 0
        try:
            while self._children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                index = self._children.pop(pid, -1)
                if index < 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
                _mark_dead(pid)
                if self._stopping:
                    # A worker still starting when SIGTERM came dies of it: that is a clean stop too.
                    if code not in (0, -signal.SIGTERM):
                        worst = max(worst, abs(code))
                    continue
                log.error("worker exited; starting a new one", extra={"worker": index, "pid": pid, "exit_code": code})
                time.sleep(RESPAWN_DELAY)
                if not self._stopping:
                    self._spawn(index)
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0 if worst == 0 else 1

    def _spawn(self, index: int) -> None:
        # Signals wait while forking: a SIGTERM landing between fork and the child's reset
        # would run the supervisor's handler in the child, and the child would live on.
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, then a whole gateway
            for sig in _FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            _stop_with_parent(supervisor)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
            code = 1
            try:
                code = self._run_worker(index)
            finally:
                os._exit(code)
        self._children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)

    def _forward(self, sig: int) -> None:
        for pid in list(self._children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        self._forward(signal.SIGTERM)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._forward(signal.SIGHUP)


def _stop_with_parent(supervisor: int) -> None:
    """A worker gets SIGTERM (and drains) when its supervisor dies, even by SIGKILL: never an orphan holding the ports."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM forwarding still holds
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _mark_dead(pid: int) -> None:
    # A dead worker's live gauges (inflight) must stop counting.
    from prometheus_client import multiprocess

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
