"""The process's own log: one JSON object per line on stderr, with structured fields instead of text in `msg`.

Every line has `ts` (RFC 3339, UTC), `level`, `logger` and `msg` (a fixed
sentence); what varies goes in fields passed as `extra={...}` (`issuer`,
`keys`, `error`, ...), so a log pipeline can filter on them. A logged exception
adds its type and the stack frames, never its message, which could quote data
a client sent. stdout is the access log's alone (access_log.py).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

# The attributes every LogRecord has: anything else on a record came in through `extra`.
_RECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def rfc3339(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds ("2026-01-02T03:04:05.678Z")."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """A LogRecord as one line of JSON (no newline can appear inside: json.dumps escapes them)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line.setdefault("exception", record.exc_info[0].__name__)
            line["traceback"] = "".join(traceback.format_tb(record.exc_info[2])).rstrip()
        return json.dumps(line, default=str, separators=(",", ":"))


def configure_logging(level: str = "info") -> None:
    """Send every logger to stderr as JSON lines at `level`; route warnings and uncaught exceptions there too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_log_level(level)
    # aiohttp's own error logs can quote raw header lines (and so tokens); ours replace them.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def set_log_level(level: str) -> None:
    """Apply `server.log_level` (at start and on every reload)."""
    logging.getLogger().setLevel(level.upper())


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("gateway").critical("uncaught exception; exiting", exc_info=(kind, exc, tb))
