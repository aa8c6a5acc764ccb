"""The signal registry: layouts derive from it, weight files carry it, the dashboard is served it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from services.cli import main
from services.gateway.models import LiveParticipant
from services.inference import fusion
from services.inference.features_audio import N_MELS
from services.inference.training import Labels, load_weights, save_weights
from services.replay.report_files import CSV_COLUMNS
from shared.contracts.events import ScoreEvent
from shared.contracts.report import TimelineRow
from shared.signals import (
    FLAG_NAMES,
    HEAD_NAMES,
    INPUT_NAMES,
    INPUTS,
    MEL_BANDS,
    OUTPUT_NAMES,
    OUTPUTS,
    registry_document,
)

from .gateway_fixtures import gateway

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LAYOUT_BEFORE_THE_REGISTRY = (
    "face_present", "head_yaw", "head_pitch", "eyes_open", "gaze", "mouth_activity", "hand_raised", "motion",
    "voice", "audio_level", "camera_on", "mic_on", *(f"mel_{i}" for i in range(8)),
)
"""The hand-kept fusion layout the registry replaced: weights and scores depend on this order."""


def test_names_are_unique_and_the_fusion_layout_is_unchanged() -> None:
    assert len(set(INPUT_NAMES)) == len(INPUT_NAMES) and len(set(OUTPUT_NAMES)) == len(OUTPUT_NAMES)
    assert INPUT_NAMES[: len(LAYOUT_BEFORE_THE_REGISTRY)] == LAYOUT_BEFORE_THE_REGISTRY  # appended, never reordered
    assert INPUT_NAMES[len(LAYOUT_BEFORE_THE_REGISTRY) :] == ("asked_question", "chat_activity")
    assert MEL_BANDS == N_MELS  # the audio features compute as many bands as the registry declares
    assert {s.modality for s in INPUTS} <= {"video", "audio", "text", "context"}
    assert all(s.description and s.unit for s in (*INPUTS, *OUTPUTS))


def test_fusion_layout_and_priors_derive_from_the_registry() -> None:
    assert fusion.SIGNALS == INPUT_NAMES and fusion.N_SIGNALS == len(INPUTS)
    assert fusion.HEADS == HEAD_NAMES == ("attentive", "speaking", "hand_raised", "engagement")
    assert all(fusion.SIGNALS[i] == name for name, i in fusion.IDX.items())
    prior = fusion.prior_state(6)
    assert prior["head_w"].shape == (len(HEAD_NAMES), len(INPUTS))
    for i, s in enumerate(INPUTS):
        assert float(prior["centre"][i]) == pytest.approx(s.gate.centre)
        assert float(prior["log_scale"].exp()[i]) == pytest.approx(s.gate.scale)
        assert float(prior["direction"][i]) == s.gate.direction
        assert float(torch.sigmoid(prior["missing_logit"][i])) == pytest.approx(s.missing_evidence, abs=1e-3)


def test_contracts_and_tables_carry_exactly_the_output_signals() -> None:
    assert tuple(TimelineRow.model_fields) == ("t", "participant", *OUTPUT_NAMES)
    assert tuple(LiveParticipant.model_fields)[: 2 + len(OUTPUTS)] == ("t", "participant", *OUTPUT_NAMES)
    for s in OUTPUTS:
        assert ScoreEvent.model_fields[s.name].annotation is (bool if s.kind == "flag" else float), s.name
    assert tuple(Labels.model_fields) == HEAD_NAMES  # training labels: one per head
    assert CSV_COLUMNS == ("t", "participant", *OUTPUT_NAMES)


def _trained(window: int = 5) -> fusion.FusionModel:
    model = fusion.FusionModel(window=window)
    with torch.no_grad():
        model.head_w.add_(0.25)
        model.centre[fusion.IDX["head_yaw"]] = 31.0
    return model


def test_weights_round_trip_with_their_layout(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_weights(_trained(), path, provenance="unit test")
    blob = torch.load(path, weights_only=True)
    assert blob["layout"] == {"signals": list(INPUT_NAMES), "heads": list(HEAD_NAMES), "window": 5}
    fresh = fusion.FusionModel(window=5)
    assert load_weights(fresh, path) == "unit test"
    for name, tensor in _trained().state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def _saved_with(tmp_path: Path, **layout: object) -> Path:
    model = _trained()
    blob = {
        "format": 2,
        "layout": {**model.layout.to_dict(), **layout},
        "window": model.window,
        "state": model.state_dict(),
        "provenance": "",
    }
    path = tmp_path / "w.pt"
    torch.save(blob, path)
    return path


def _refusal(path: Path, window: int = 5) -> str:
    with pytest.raises(ValueError) as err:
        load_weights(fusion.FusionModel(window=window), path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_reordered_layout_is_refused_naming_what_moved(tmp_path: Path) -> None:
    swapped = list(INPUT_NAMES)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    message = _refusal(_saved_with(tmp_path, signals=swapped))
    assert "signals reordered (position 1 is head_pitch in the file, head_yaw in this build)" in message
    assert "retrain with `classpulse train`" in message


def test_an_extended_or_shortened_layout_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(_saved_with(tmp_path, signals=[*INPUT_NAMES, "chat_messages"]))
    assert "signals unknown to this build: chat_messages" in message and "classpulse train" in message
    message = _refusal(_saved_with(tmp_path, signals=list(INPUT_NAMES[:-1]), heads=list(HEAD_NAMES[:3])))
    assert "signals missing from the file: chat_activity" in message
    assert "heads missing from the file: engagement" in message
    # Weights saved before the text signals refuse, naming them.
    message = _refusal(_saved_with(tmp_path, signals=list(LAYOUT_BEFORE_THE_REGISTRY)))
    assert "signals missing from the file: asked_question, chat_activity" in message
    # A build whose registry gained a signal refuses the weights saved before it.
    path = tmp_path / "old.pt"
    save_weights(_trained(), path, provenance="")
    monkeypatch.setattr(fusion, "SIGNALS", (*INPUT_NAMES, "chat_messages"))
    assert "signals missing from the file: chat_messages" in _refusal(path)


def test_another_window_is_refused_with_the_setting_to_change(tmp_path: Path) -> None:
    message = _refusal(_saved_with(tmp_path), window=8)
    assert "window 5 steps (the engine uses 8)" in message and "CLASSPULSE_INFERENCE_WINDOW_STEPS" in message


def test_files_without_a_layout_load_only_when_their_shapes_fit(tmp_path: Path) -> None:
    """Files of format 1 (saved before layouts were stored): the layout never changed before, so the shape decides."""
    model = _trained()
    legacy = tmp_path / "legacy.pt"
    torch.save({"window": 5, "state": model.state_dict(), "provenance": "old"}, legacy)
    assert load_weights(fusion.FusionModel(window=5), legacy) == "old"
    assert "window 5 steps (the engine uses 8)" in _refusal(legacy, window=8)
    state = {**model.state_dict(), "head_w": torch.zeros(len(HEAD_NAMES), len(INPUTS) - 1)}
    torch.save({"window": 5, "state": state, "provenance": "old"}, legacy)
    message = _refusal(legacy)
    assert f"saved without a signal layout, for {len(INPUTS) - 1} signals" in message
    assert "retrain with `classpulse train`" in message


def test_the_cli_reports_a_refused_file_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = tmp_path / "t.jsonl"
    timeline.write_text('{"media_time": 0.0, "labels": {"attentive": true}}\n')
    swapped = list(reversed(INPUT_NAMES))
    assert main(["evaluate", str(timeline), "--weights", str(_saved_with(tmp_path, signals=swapped))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "signals reordered" in err and len(err.splitlines()) == 1


async def test_the_dashboard_page_carries_the_registry() -> None:
    async with gateway() as h:
        resp = await h.client.get("/dashboard")
        assert resp.status == 200
        page = await resp.text()
    found = re.search(r'<script id="signal-registry" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    assert json.loads(found.group(1)) == registry_document()
    assert "SIGNAL_REGISTRY" not in page


def test_dashboard_script_keeps_no_list_of_signals() -> None:
    script = (REPO / "services" / "gateway" / "static" / "dashboard.js").read_text(encoding="utf-8")
    assert "signal-registry" in script
    labels = [s.badge_on for s in OUTPUTS if s.badge_on] + [s.badge_off for s in OUTPUTS if s.badge_off]
    for text in (*FLAG_NAMES, *labels):
        assert f'"{text}"' not in script and f"'{text}'" not in script, text
