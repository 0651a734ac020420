"""Structured logging. Every line carries the request id, tenant and subject of the
call being served (from context variables), in text or JSON (TAHOE_LOG_FORMAT)."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Callable

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
subject_var: contextvars.ContextVar[str] = contextvars.ContextVar("subject", default="")
traceparent_var: contextvars.ContextVar[str] = contextvars.ContextVar("traceparent", default="")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant = tenant_var.get()
        record.subject = subject_var.get()
        record.traceparent = traceparent_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value not in ("", None):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and value not in ("", None)
        )
        return f"{line} {extras}" if extras else line


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class SampledLog:
    """Logs at most `per_second` lines per key each second; the rest are counted and
    summarised in one line at most every `summary_every` seconds, so that a flood of
    denials cannot flood the log."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = 5,
        summary_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_second = per_second
        self._summary_every = summary_every
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}
        self._suppressed: dict[str, int] = {}
        self._last_summary = clock()

    def log(self, level: int, key: str, message: str, *args: object, extra: dict[str, object] | None = None) -> bool:
        """Log the line unless `key` is over its rate; True when it was logged."""
        now = self._clock()
        summary: dict[str, int] = {}
        with self._lock:
            started, count = self._windows.get(key, (now, 0))
            if now - started >= 1.0:
                started, count = now, 0
            count += 1
            self._windows[key] = (started, count)
            emit = count <= self._per_second
            if not emit:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if self._suppressed and now - self._last_summary >= self._summary_every:
                summary, self._suppressed = self._suppressed, {}
                self._last_summary = now
        if emit:
            self._logger.log(level, message, *args, extra=extra)
        if summary:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.items()))
            self._logger.log(level, "%s more not logged (rate-limited): %s", sum(summary.values()), counts)
        return emit
