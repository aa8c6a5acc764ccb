"""Designed logging: fixed message texts, structured fields, personal data in a marked field.

Usage::

    log = get_logger(__name__)
    log.info("publisher state %s -> %s", "new", "connected", extra=pii(participant="p1"))

Other ``extra`` fields are written by both formatters: ``log.info("engine %s -> %s",
"loading", "ready", extra={"seconds": 2.1})`` gives ``"seconds": 2.1`` in JSON lines and
``seconds=2.1`` on text lines.

Personal data (participant ids, names) goes only into ``extra=pii(...)``; both formatters
write it apart from the other fields (JSON: under ``"pii"``; text: in brackets) or drop it
when ``redact_pii`` is on, so log lines can be shipped without personal data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_PII_ATTR = "classpulse_pii"
# What logging itself puts on a record (plus what Formatter.format adds); everything else came from ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_JSON_KEYS = frozenset({"ts", "level", "logger", "msg", "pii", "exc"})  # an extra field named so gets "extra_"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def pii(**fields: object) -> dict[str, Any]:
    """Mark personal data for a log call: ``log.info("...", extra=pii(participant=p))``."""
    return {_PII_ATTR: {k: str(v) for k, v in fields.items()}}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record, without logging's own attributes and without pii."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and k != _PII_ATTR}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: extra fields as keys (numbers stay numbers); personal data only
    under ``pii`` unless redacted."""

    def __init__(self, *, redact_pii: bool) -> None:
        super().__init__()
        self.redact_pii = redact_pii

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out[f"extra_{key}" if key in _JSON_KEYS else key] = value
        data = getattr(record, _PII_ATTR, None)
        if data and not self.redact_pii:
            out["pii"] = data
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for terminals: extra fields appended as ``key=value``, personal data
    after them in brackets unless redacted (a traceback follows on the next lines)."""

    def __init__(self, *, redact_pii: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.redact_pii = redact_pii

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            text += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        data = getattr(record, _PII_ATTR, None)
        if data and not self.redact_pii:
            text += " [" + " ".join(f"{k}={v}" for k, v in data.items()) + "]"
        return text


def _text_value(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def setup_logging(*, level: str = "INFO", json_lines: bool = False, redact_pii: bool = False) -> None:
    """Configure the root logger once, at a service's entry point (never at import)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact_pii=redact_pii) if json_lines else TextFormatter(redact_pii=redact_pii))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "aioice", "aiortc", "faust", "mode", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


_log = get_logger(__name__)


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start a short-lived background task whose failure is logged, never silently lost.

    Long-lived tasks (readers, writers, heartbeats, loops) run under
    :meth:`shared.supervise.Supervisor.spawn` instead: retried, restarted, reported on ``/healthz``.
    """
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_task_result)
    return task


def _log_task_result(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        _log.error("background task %s failed", task.get_name(), exc_info=exc)
