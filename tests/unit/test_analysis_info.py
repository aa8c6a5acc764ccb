"""Which perception backend and device analysed: report.json's ``analysis``, check-config, /metrics.

The field is optional, so reports written before it (and rebuilt from score events) still
validate; the engine fills it from its settings and built backend; ``check-config`` prints it
without building models; ``/metrics`` carries it as the labels of an info gauge, next to the
per-call perception batch size and device time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.cli import main
from services.inference.engine import InferenceEngine
from services.inference.perception_registry import analysis_for
from services.inference.settings import InferenceSettings
from services.replay.pipeline import _analysis
from shared.contracts.report import AnalysisInfo, Report
from shared.metrics import Metrics
from shared.testkit.messages import frames
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.unit


class OnDevice(NoFaces):
    """No faces, on a named device (as the torch backend reports its device)."""

    name = "on-device"
    device = "cuda"


MINIMAL = {
    "session": {"id": "s", "source": "x.mp4", "duration_s": 1.0},
    "participants": [],
    "timeline": [],
    "summary": {"duration_s": 1.0, "participants": {}},
}


def test_reports_without_analysis_still_validate_and_with_it_round_trip() -> None:
    old = Report.model_validate(MINIMAL)  # a report.json written before the field
    assert old.analysis is None and "analysis" not in json.loads(old.model_dump_json())
    new = old.model_copy(update={"analysis": AnalysisInfo(backend="torch", device="cuda")})
    again = Report.model_validate_json(new.model_dump_json())
    assert again.analysis == AnalysisInfo(backend="torch", device="cuda")
    with pytest.raises(ValueError):
        AnalysisInfo(backend="", device="cpu")


def test_engine_records_backend_and_device_on_metrics_and_for_the_report() -> None:
    metrics = Metrics(CollectorRegistry())
    engine = InferenceEngine(settings=InferenceSettings(backend="torch"), backend=OnDevice(), metrics=metrics)
    engine.load()
    assert engine.analysis == AnalysisInfo(backend="torch", device="cuda")
    assert _analysis(engine) == engine.analysis
    assert _analysis(type("Wrapped", (), {"engine": engine})()) == engine.analysis  # gallery's scorer
    image = np.zeros((48, 64, 3), np.uint8)
    engine.process(
        frames([image] * 3, session="s", participant="a") + frames([image] * 3, session="s", participant="b")
    )
    reg = metrics.registry
    assert reg.get_sample_value("classpulse_inference_analysis_info", {"backend": "torch", "device": "cuda"}) == 1
    calls = reg.get_sample_value("classpulse_inference_perception_batch_size_count", {"backend": "torch"})
    frames_seen = reg.get_sample_value("classpulse_inference_perception_batch_size_sum", {"backend": "torch"})
    assert calls == 3 and frames_seen == 6  # one call per round, both participants together
    seconds = {"backend": "torch", "device": "cuda"}
    assert reg.get_sample_value("classpulse_inference_perception_device_seconds_count", seconds) == 3


def test_check_config_prints_the_analysis(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLASSPULSE_INFERENCE_BACKEND", "torch")
    monkeypatch.setenv("CLASSPULSE_INFERENCE_DEVICE", "cpu")
    assert main(["check-config"]) == 0
    assert json.loads(capsys.readouterr().out)["analysis"] == {"backend": "torch", "device": "cpu"}
    assert analysis_for(InferenceSettings(backend="mediapipe", device="cuda")).device == "cpu"  # mediapipe: CPU only
