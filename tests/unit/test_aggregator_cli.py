"""`classpulse aggregator`: settings check and clear errors (no Kafka needed)."""

from __future__ import annotations

import json

import pytest

from services.cli import main

pytestmark = pytest.mark.unit


def test_check_config_prints_the_effective_settings(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSPULSE_AGGREGATOR_AWAY_AFTER_S", "20")
    assert main(["aggregator", "--check-config", "--metrics-port", "9999", "--engine", "plain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["away_after_s"] == 20.0 and out["metrics_port"] == 9999 and out["engine"] == "plain"


@pytest.mark.parametrize(("name", "value", "text"), [
    ("CLASSPULSE_AGGREGATOR_TUMBLING_SIZES_S", "[1.5]", "whole multiple"),
    ("CLASSPULSE_AGGREGATOR_AWAY_AFTR_S", "3", "did you mean CLASSPULSE_AGGREGATOR_AWAY_AFTER_S"),
    ("CLASSPULSE_AGGREGATOR_LATENESS_S", "-1", "CLASSPULSE_AGGREGATOR_LATENESS_S='-1': Input should be greater"),
])
def test_bad_settings_exit_2_with_one_clear_message(name: str, value: str, text: str,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    assert main(["aggregator", "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and text in err and "Traceback" not in err and err.count("\n") == 1
