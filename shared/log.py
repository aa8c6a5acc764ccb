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
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_PII_ATTR = "classpulse_pii"
# What logging itself puts on a record (plus what Formatter.format adds); everything else came from ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_JSON_KEYS = frozenset({"ts", "level", "logger", "msg", "pii", "exc"})  # an extra field named so gets "extra_"
NOISY_LIBRARIES = ("aiokafka", "aioice", "aiortc", "faust", "mode")
"""Libraries that log every retry while a broker or a peer is away: their repeats are summarised."""


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


class RepeatSummary(logging.Filter):
    """Lets one record per message text of a noisy library through every ``every_s``; the next one
    that passes says how many it stood for.

    While Kafka is down aiokafka logs each failed connect, metadata refresh, fetch and produce of
    every client: ~100 ERROR lines a second per service, which buried the services' own lines and
    cost CPU on a 2-core box. Now the same outage reads as one line per kind of error and interval,
    e.g. ``Unable connect to node with id 1: ... (and 57 more like it in 10 s)``. Keyed by the
    message's format string (its arguments differ between repeats), so distinct errors still show.
    """

    def __init__(
        self, *, every_s: float = 10.0, libraries: tuple[str, ...] = NOISY_LIBRARIES,
        clock: Callable[[], float] = time.monotonic, max_keys: int = 256,
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self.libraries = libraries
        self.clock = clock
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # key -> [passed at, held since]

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == lib or name.startswith(lib + ".") for lib in self.libraries):
            return True
        key, now = (name, str(record.msg)), self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} (and {int(seen[1])} more like it in {now - seen[0]:.0f} s)"
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True


def setup_logging(*, level: str = "INFO", json_lines: bool = False, redact_pii: bool = False) -> None:
    """Configure the root logger once, at a service's entry point (never at import)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact_pii=redact_pii) if json_lines else TextFormatter(redact_pii=redact_pii))
    handler.addFilter(RepeatSummary())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (*NOISY_LIBRARIES, "matplotlib", "PIL"):
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
