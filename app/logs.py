"""Structured logging: JSON lines (or readable text), session-id hashing, secret redaction. The access log
is written by `app/http/middleware/access_log.py` through `direct_json_stream` or the logger here.

Raw session ids are never logged: use `hash_session_id`. Extra fields named `session_id` are hashed
by the formatter as a safety net, and extra fields whose names look secret are redacted.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

REDACTED = "[REDACTED]"
_SECRET_MARKERS = ("password", "token", "secret", "authorization", "api_key", "apikey", "api-key", "cookie")
_MAX_DEPTH = 32

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

ACCESS_LOGGER = "session_broker.access"


def hash_session_id(session_id: str | bytes) -> str:
    """Short stable reference to a session id for logs: 'sid:' + first 12 hex of its SHA-256."""
    raw = session_id.encode() if isinstance(session_id, str) else session_id
    return "sid:" + hashlib.sha256(raw).hexdigest()[:12]


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact_metadata(obj: Any, _depth: int = 0) -> Any:
    """Copy of `obj` with the values of secret-looking keys (at any depth) replaced by '[REDACTED]'."""
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(obj, dict):
        return {k: REDACTED if _is_secret_key(k) else redact_metadata(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_metadata(v, _depth + 1) for v in obj]
    return obj


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        if key == "session_id" and isinstance(value, str | bytes):
            extras[key] = hash_session_id(value)
        elif _is_secret_key(key):
            extras[key] = REDACTED
        else:
            extras[key] = redact_metadata(value)
    return extras


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then any extra fields (exc on errors)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable single lines for a terminal: `ts LEVEL logger: msg key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"]
        parts.extend(f"{k}={v}" for k, v in _extras(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Route all logging (including uvicorn's) to stderr as JSON lines or text.

    fmt: auto (json unless stderr is a tty) | json | text. uvicorn's own access log is silenced:
    `AccessLogMiddleware` writes one line per request instead. Start uvicorn with `log_config=None`
    so it does not install its own handlers over these.
    """
    fmt = str(getattr(fmt, "value", fmt)).lower()
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be auto, json or text, not {fmt!r}")
    # The logging HOWTO's "Optimization" knobs: none of these fields are logged, and collecting them
    # (a stack walk for the caller, thread and process names) was a measurable share of a touch.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _configured_json_handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _configured_json_handler = handler if fmt == "json" else None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(str(getattr(level, "value", level)).upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


# The handler configure_logging installed when the format is json; None otherwise.
_configured_json_handler: logging.Handler | None = None


def direct_json_stream(logger: logging.Logger) -> Any:
    """The stream to write access lines to directly, if logging is exactly as configure_logging left it.

    One access line per request through the logging machinery (record, handler lock, formatter) cost
    ~13 % of a touch. When nobody has customised logging (no other handlers or filters on the access
    logger or the root), writing the same JSON line straight to the handler's stream is equivalent.
    Otherwise (tests, embedding applications) the normal logging path is used.
    """
    handler = _configured_json_handler
    if handler is None or logger.handlers or logger.filters or not logger.propagate:
        return None
    root = logging.getLogger()
    if root.handlers != [handler] or root.filters or handler.filters:
        return None
    return getattr(handler, "stream", None)
