"""Training the fusion model on generated labelled timelines: the loss falls and a known relation is recovered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from services.cli import main
from services.inference.fusion import IDX, FusionModel
from services.inference.training import build_dataset, evaluate, read_timeline, train

pytestmark = pytest.mark.unit

TRUE_CONE = 35.0
"""Generated truth: attentive iff the face is present and |yaw| < 35 deg (the priors say 20)."""


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The model is tiny: one thread is fastest on a shared box (the commands set it too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_timeline(path: Path, *, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yaw = 0.0
    with path.open("w") as fh:
        for i in range(rows):
            yaw = float(np.clip(yaw + rng.normal(0, 8), -70, 70)) if i % 10 else float(rng.uniform(-60, 60))
            present = bool(rng.random() > 0.1)
            features = {"face_present": present}
            if present:
                features |= {
                    "yaw_deg": yaw,
                    "pitch_deg": float(rng.normal(0, 4)),
                    "eye_openness": 0.3,
                    "gaze_offset": 0.1,
                }
            labels = {"attentive": present and abs(yaw) < TRUE_CONE}
            row = {
                "session": "gen",
                "participant": f"p{i // 200}",
                "media_time": (i % 200) * 0.2,
                "features": features,
                "labels": labels,
            }
            fh.write(json.dumps(row) + "\n")
    return path


def test_training_lowers_loss_and_recovers_the_attention_cone(tmp_path: Path) -> None:
    rows = read_timeline(write_timeline(tmp_path / "train.jsonl", rows=600, seed=1))
    model = FusionModel(window=8)
    data = build_dataset(rows, window=8)
    before = evaluate(model, data)
    history = train(model, data, epochs=100, lr=0.05)
    after = evaluate(model, data)
    assert history[-1] < 0.7 * history[0]
    assert after["attentive_accuracy"] > before["attentive_accuracy"]
    assert after["attentive_accuracy"] > 0.9
    learned_cone = float(model.centre[IDX["head_yaw"]])
    assert abs(learned_cone - TRUE_CONE) < 6.0, learned_cone  # moved from the 20 deg prior to ~35


def test_train_and_evaluate_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = write_timeline(tmp_path / "t.jsonl", rows=400, seed=2)
    weights = tmp_path / "w.pt"
    assert main(["train", str(timeline), "--out", str(weights), "--epochs", "40"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["loss_after"] < trained["loss_before"] and weights.is_file()
    assert main(["evaluate", str(timeline), "--weights", str(weights)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["loss"] == pytest.approx(trained["loss"], abs=1e-4)


def test_bad_timeline_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"media_time": 1.0}\n')
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "labels" in err
    assert main(["evaluate", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
