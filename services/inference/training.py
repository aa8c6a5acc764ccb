"""Training and evaluation of the fusion model on labelled timelines.

Labelled-timeline format (JSON Lines, one object per analysis step)::

    {"session": "s1", "participant": "p1", "media_time": 1.2,
     "camera_on": true, "mic_on": true,
     "features": { ...FeatureSnapshot fields... },
     "labels": {"attentive": true, "speaking": false, "hand_raised": false, "engagement": 0.8}}

Any ``ScoreEvent`` JSON line (the Kafka ``classpulse.scores`` log, or scores written by
replay) plus a ``labels`` object is a valid row; extra keys are ignored. Labels may be
partial: a missing head is left out of its loss. Rows are grouped by (session,
participant) and ordered by ``media_time`` to rebuild the model's windows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.inference.fusion import HEADS, IDX, N_SIGNALS, SIGNALS, FusionLayout, FusionModel
from shared.contracts.events import FeatureSnapshot
from shared.signals import OUTPUTS

_LEVEL_HEADS = frozenset(s.name for s in OUTPUTS if s.head and s.kind == "level")
"""Heads with a 0..1 target (scored by mean absolute error; the true/false heads by accuracy)."""


class Labels(BaseModel):
    """One label per fusion head (``shared.signals`` heads; a unit test keeps them equal)."""

    model_config = ConfigDict(extra="forbid")

    attentive: bool | None = None
    speaking: bool | None = None
    hand_raised: bool | None = None
    engagement: float | None = Field(default=None, ge=0.0, le=1.0)


class LabelledRow(BaseModel):
    """One row of a labelled timeline (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")

    session: str = "session"
    participant: str = "participant"
    media_time: float = Field(ge=0.0)
    camera_on: bool = True
    mic_on: bool = True
    features: FeatureSnapshot = Field(default_factory=FeatureSnapshot)
    labels: Labels


class TimelineError(ValueError):
    """A labelled timeline cannot be read."""


def read_timeline(path: Path) -> list[LabelledRow]:
    """Parse a JSON Lines labelled timeline; errors name the file and line."""
    if not path.is_file():
        raise TimelineError(f"{path}: no such file; pass a JSON Lines labelled timeline (see `classpulse train -h`)")
    rows = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(LabelledRow.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise TimelineError(f"{path}:{n}: {where}: {first['msg']}") from None
    if not rows:
        raise TimelineError(f"{path}: no rows")
    return rows


def step_vector(row: LabelledRow) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The model's input vector and measured-mask for one row (same encoding as the engine)."""
    f = row.features
    vec = np.zeros(N_SIGNALS, dtype=np.float32)
    mask = np.zeros(N_SIGNALS, dtype=np.float32)

    def put(name: str, value: float | None) -> None:
        if value is not None:
            vec[IDX[name]], mask[IDX[name]] = float(value), 1.0

    put("camera_on", float(row.camera_on))
    put("mic_on", float(row.mic_on))
    if row.camera_on:
        put("face_present", None if f.face_present is None else float(f.face_present))
    put("head_yaw", None if f.yaw_deg is None else abs(f.yaw_deg))
    put("head_pitch", None if f.pitch_deg is None else abs(f.pitch_deg))
    put("eyes_open", f.eye_openness)
    put("gaze", f.gaze_offset)
    put("mouth_activity", f.mouth_activity)
    put("hand_raised", None if f.wrist_above_shoulder is None else float(f.wrist_above_shoulder))
    put("motion", f.motion)
    put("voice", f.voice_prob)
    put("audio_level", f.rms_dbfs)
    return vec, mask


@dataclass
class Dataset:
    x: torch.Tensor  # (N, T, F)
    measured: torch.Tensor  # (N, T, F)
    valid: torch.Tensor  # (N, T)
    targets: torch.Tensor  # (N, H)
    target_mask: torch.Tensor  # (N, H)


def build_dataset(rows: Iterable[LabelledRow], *, window: int) -> Dataset:
    """Windows ending at every row, per (session, participant), in media-time order."""
    groups: dict[tuple[str, str], list[LabelledRow]] = defaultdict(list)
    for row in rows:
        groups[(row.session, row.participant)].append(row)
    xs, ms, vs, ts, tms = [], [], [], [], []
    for group in groups.values():
        group.sort(key=lambda r: r.media_time)
        encoded = [step_vector(r) for r in group]
        for end, row in enumerate(group):
            x = np.zeros((window, N_SIGNALS), dtype=np.float32)
            m = np.zeros((window, N_SIGNALS), dtype=np.float32)
            v = np.zeros(window, dtype=np.float32)
            start = max(0, end - window + 1)
            for k, j in enumerate(range(start, end + 1)):
                pos = window - (end + 1 - start) + k
                x[pos], m[pos] = encoded[j]
                v[pos] = 1.0
            target = np.zeros(len(HEADS), dtype=np.float32)
            tmask = np.zeros(len(HEADS), dtype=np.float32)
            for h, head in enumerate(HEADS):
                value = getattr(row.labels, head)
                if value is not None:
                    target[h], tmask[h] = float(value), 1.0
            xs.append(x)
            ms.append(m)
            vs.append(v)
            ts.append(target)
            tms.append(tmask)
    return Dataset(
        x=torch.from_numpy(np.stack(xs)),
        measured=torch.from_numpy(np.stack(ms)),
        valid=torch.from_numpy(np.stack(vs)),
        targets=torch.from_numpy(np.stack(ts)),
        target_mask=torch.from_numpy(np.stack(tms)),
    )


def loss_of(model: FusionModel, data: Dataset) -> torch.Tensor:
    """Masked binary cross-entropy over the labelled heads (engagement as a soft target)."""
    out = model(data.x, data.measured, data.valid)
    probs = out.probs.clamp(1e-5, 1 - 1e-5)
    bce = -(data.targets * torch.log(probs) + (1 - data.targets) * torch.log(1 - probs))
    return (bce * data.target_mask).sum() / data.target_mask.sum().clamp_min(1.0)


CENTRE_LR_SCALE = 20.0


def train(model: FusionModel, data: Dataset, *, epochs: int, lr: float, seed: int = 0) -> list[float]:
    """Full-batch Adam; returns the loss before training and after each epoch."""
    torch.manual_seed(seed)
    # Gate centres live in raw feature units (degrees, dB), so they get a larger step.
    others = [p for name, p in model.named_parameters() if name != "centre"]
    groups: list[dict[str, Any]] = [{"params": others}, {"params": [model.centre], "lr": lr * CENTRE_LR_SCALE}]
    optim = torch.optim.Adam(groups, lr=lr)
    model.train()
    with torch.no_grad():
        history = [float(loss_of(model, data))]
    for _ in range(epochs):
        optim.zero_grad()
        loss = loss_of(model, data)
        loss.backward()  # type: ignore[no-untyped-call]
        optim.step()
        history.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        history[-1] = float(loss_of(model, data))
    return history


def evaluate(model: FusionModel, data: Dataset) -> dict[str, Any]:
    """Loss and per-head accuracy (level heads such as engagement: mean absolute error)."""
    model.eval()
    with torch.no_grad():
        out = model(data.x, data.measured, data.valid)
        loss = float(loss_of(model, data))
    report: dict[str, Any] = {"rows": int(data.x.shape[0]), "loss": round(loss, 5)}
    for h, head in enumerate(HEADS):
        sel = data.target_mask[:, h] > 0
        n = int(sel.sum())
        if n == 0:
            continue
        pred, truth = out.probs[sel, h], data.targets[sel, h]
        if head in _LEVEL_HEADS:
            report[f"{head}_mae"] = round(float((pred - truth).abs().mean()), 4)
        else:
            report[f"{head}_accuracy"] = round(float(((pred > 0.5).float() == truth).float().mean()), 4)
        report[f"{head}_rows"] = n
    return report


WEIGHTS_FORMAT = 2
"""Version of the weights file: 2 stores the fusion layout (files of format 1 have none)."""


def save_weights(model: FusionModel, path: Path, *, provenance: str) -> None:
    """Save weights with their layout (signals, heads, window) and a provenance note (what they were trained on)."""
    blob = {
        "format": WEIGHTS_FORMAT,
        "layout": model.layout.to_dict(),
        "window": model.window,  # also in the layout; what builds before format 2 read
        "state": model.state_dict(),
        "provenance": provenance,
    }
    torch.save(blob, path)


def _file_layout(blob: dict[str, Any]) -> FusionLayout:
    """The layout a file was saved for.

    Format-1 files carry none; they are accepted when their head weights have this build's
    shape: until format 2 the layout never changed, so that shape means the same signals in
    the same order.
    """
    if "layout" in blob:
        return FusionLayout.from_dict(blob["layout"])
    head_w = blob["state"].get("head_w") if isinstance(blob["state"], dict) else None
    heads, signals = tuple(head_w.shape) if isinstance(head_w, torch.Tensor) and head_w.dim() == 2 else (0, 0)
    if (heads, signals) != (len(HEADS), N_SIGNALS):
        raise ValueError(
            f"saved without a signal layout, for {signals} signals and {heads} heads "
            f"(this build has {N_SIGNALS} and {len(HEADS)})"
        )
    return FusionLayout(signals=SIGNALS, heads=HEADS, window=int(blob.get("window", -1)))


def load_weights(model: FusionModel, path: str | Path) -> str:
    """Load weights saved by :func:`save_weights`; returns their provenance note.

    Refuses (``ValueError``, one line) a file laid out for other signals, heads or window.
    """
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state" not in blob:
        raise ValueError(f"{path}: not a ClassPulse fusion weights file (expected one written by `classpulse train`)")
    try:
        layout = _file_layout(blob)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; retrain with `classpulse train`") from None
    differences = layout.differences(model.layout)
    if differences:
        expected = model.layout
        fix = (
            "set CLASSPULSE_INFERENCE_WINDOW_STEPS to match or retrain with `classpulse train`"
            if (layout.signals, layout.heads) == (expected.signals, expected.heads)
            else "retrain with `classpulse train` on a labelled timeline"
        )
        raise ValueError(f"{path}: weights do not fit this build's fusion layout: {'; '.join(differences)}; {fix}")
    model.load_state_dict(blob["state"])
    return str(blob.get("provenance", ""))

