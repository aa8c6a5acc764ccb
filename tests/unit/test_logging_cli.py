"""Logging keeps personal data in a marked, strippable field; the CLI's core commands work."""

from __future__ import annotations

import json
import logging

import pytest

from services.cli import main
from shared.log import JsonFormatter, TextFormatter, pii
from shared.tokens import verify_token

pytestmark = pytest.mark.unit


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "publisher state %s -> %s", ("new", "live"), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_pii_only_in_marked_field_and_redactable() -> None:
    extra = pii(participant="alice")
    line = json.loads(JsonFormatter(redact_pii=False).format(_record(**extra)))
    assert line["msg"] == "publisher state new -> live"
    assert line["pii"] == {"participant": "alice"}
    redacted = JsonFormatter(redact_pii=True).format(_record(**extra))
    assert "alice" not in redacted
    assert "alice" not in TextFormatter(redact_pii=True).format(_record(**extra))


def test_token_command_prints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--session", "s1", "--participant", "p1", "--role", "teacher"]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), secret="classpulse-dev-secret-change-me")
    assert (claims.session, claims.participant, claims.role) == ("s1", "p1", "teacher")


def test_check_config_rejects_unknown_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLASSPULSE_KAFKA_BOOTSTRAPS", "x:1")
    assert main(["check-config"]) == 2
    assert "CLASSPULSE_KAFKA_BOOTSTRAP" in capsys.readouterr().err
    monkeypatch.delenv("CLASSPULSE_KAFKA_BOOTSTRAPS")
    assert main(["check-config"]) == 0
    assert '"redis_url": "**********"' in capsys.readouterr().out
