"""Designed logging: fixed message texts, structured fields, personal data in a marked field.

Usage::

    log = get_logger(__name__)
    log.info("publisher state %s -> %s", "new", "connected", extra=pii(participant="p1"))

Personal data (participant ids, names) goes only into ``extra=pii(...)``; the JSON
formatter writes it under ``"pii"`` or drops it when ``redact_pii`` is on, so log lines
can be shipped without personal data.
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


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def pii(**fields: object) -> dict[str, Any]:
    """Mark personal data for a log call: ``log.info("...", extra=pii(participant=p))``."""
    return {_PII_ATTR: {k: str(v) for k, v in fields.items()}}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; personal data only under ``pii`` unless redacted."""

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
        data = getattr(record, _PII_ATTR, None)
        if data and not self.redact_pii:
            out["pii"] = data
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """Human-readable lines for terminals; personal data appended in brackets unless redacted."""

    def __init__(self, *, redact_pii: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.redact_pii = redact_pii

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        data = getattr(record, _PII_ATTR, None)
        if data and not self.redact_pii:
            text += " [" + " ".join(f"{k}={v}" for k, v in data.items()) + "]"
        return text


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
    """Start a background task whose failure is logged, never silently lost."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_task_result)
    return task


def _log_task_result(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        _log.error("background task %s failed", task.get_name(), exc_info=exc)
