"""Both log formatters write the ``extra={...}`` fields of a call, apart from the personal data."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from shared.log import JsonFormatter, RepeatSummary, TextFormatter, pii

pytestmark = pytest.mark.unit


def _record(**extra: object) -> logging.LogRecord:
    """A record as ``log.info(msg, extra=extra)`` makes it (logging copies ``extra`` onto the record)."""
    logger = logging.getLogger("t")
    return logger.makeRecord("t", logging.INFO, __file__, 1, "engine %s -> %s", ("loading", "ready"), None, extra=extra)


def test_json_lines_carry_extra_fields_as_typed_keys() -> None:
    line = json.loads(JsonFormatter(redact_pii=False).format(_record(seconds=2.5, port=9103, topics=["a", "b"])))
    assert line["msg"] == "engine loading -> ready"
    assert line["seconds"] == 2.5 and line["port"] == 9103 and line["topics"] == ["a", "b"]
    assert "pii" not in line
    assert not {"lineno", "args", "levelno", "pathname", "threadName", "exc_info"} & set(line)


def test_text_lines_append_extra_fields_as_key_value() -> None:
    text = TextFormatter(redact_pii=False).format(_record(seconds=2.5, port=9103))
    assert text.endswith("t: engine loading -> ready seconds=2.5 port=9103")
    assert "lineno" not in text


def test_pii_stays_apart_from_the_fields_and_is_redactable() -> None:
    record = _record(port=8080, **pii(participant="alice"))
    line = json.loads(JsonFormatter(redact_pii=False).format(record))
    assert line["port"] == 8080 and line["pii"] == {"participant": "alice"} and "participant" not in line
    redacted = json.loads(JsonFormatter(redact_pii=True).format(record))
    assert redacted["port"] == 8080 and "alice" not in json.dumps(redacted)
    text = TextFormatter(redact_pii=False).format(record)
    assert text.endswith("port=8080 [participant=alice]")
    assert "alice" not in TextFormatter(redact_pii=True).format(record)


def test_an_extra_field_never_overwrites_the_line_itself() -> None:
    line = json.loads(JsonFormatter(redact_pii=False).format(_record(level="hot", msg_count=3)))
    assert line["level"] == "info" and line["extra_level"] == "hot" and line["msg_count"] == 3


def test_extra_fields_come_before_a_traceback_on_text_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "batch failed", (), sys.exc_info(), extra={"count": 2}
        )
    first, *rest = TextFormatter(redact_pii=False).format(record).splitlines()
    assert first.endswith("batch failed count=2") and rest[-1] == "ValueError: boom"


def test_a_noisy_librarys_repeats_pass_once_per_interval_and_the_next_says_how_many() -> None:
    now = [0.0]
    summary = RepeatSummary(every_s=10.0, clock=lambda: now[0])

    def send(name: str, msg: str, *args: object) -> str | None:
        record = logging.getLogger(name).makeRecord(name, logging.ERROR, __file__, 1, msg, args, None)
        return record.getMessage() if summary.filter(record) else None

    connect = "Unable connect to node with id %s: %s"
    passed = []
    for i in range(100):  # 10 a second for 10 s, then one more
        now[0] = i / 10
        passed.append(send("aiokafka", connect, 1, "refused"))
    assert [p for p in passed if p] == ["Unable connect to node with id 1: refused"]
    assert send("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1, "x") is not None  # another text
    now[0] = 10.0
    summarised = "Unable connect to node with id 1: refused (and 99 more like it in 10 s)"
    assert send("aiokafka", connect, 1, "refused") == summarised
    now[0] = 25.0
    assert send("aiokafka", connect, 1, "refused") == "Unable connect to node with id 1: refused"  # none held back
    assert all(send("services.inference.worker", "worker %s", i) == f"worker {i}" for i in range(5))  # ours: all
