"""The fusion model's layout and hand-set priors, without torch (numpy arrays).

What :mod:`services.inference.fusion` (the torch ``nn.Module``) and
:mod:`services.inference.fusion_numpy` (the same arithmetic in numpy, for CPU replay without
torch) share: the input and head order, the block indices, and :func:`prior_arrays` (the
parameters nobody trained; see the :mod:`services.inference.fusion` docstring for where each
value comes from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shared.signals import FLAG_NAMES, HEAD_NAMES, INPUT_NAMES, INPUTS

SIGNALS: tuple[str, ...] = INPUT_NAMES
"""Input signals, in the order of the feature vector (declared in :data:`shared.signals.INPUTS`)."""
N_SIGNALS = len(SIGNALS)
HEADS: tuple[str, ...] = HEAD_NAMES
"""Behaviour heads, in the order of the fusion output's ``probs`` (the ``head`` outputs of the registry)."""
IDX = {name: i for i, name in enumerate(SIGNALS)}
CORE = tuple(i for i, s in enumerate(INPUTS) if not s.optional)
"""Indices of the signals every participant has (video, audio, context)."""
OPTIONAL = tuple(i for i, s in enumerate(INPUTS) if s.optional)
"""Indices of the optional signals (text): their own block, exactly no evidence while unmeasured."""
NO_EVIDENCE_LOGIT = -200.0
"""Missing-evidence logit of the optional signals: sigmoid() of it is exactly 0.0 in float32 and float64."""
FLAG_HEADS = [i for i, head in enumerate(HEADS) if head in FLAG_NAMES]
"""The true/false heads, whose decisiveness feeds ``confidence``."""

# Head weights over pooled evidence (missing names = 0) and biases.
_ATTENTION_CUES = ("face_present", "head_yaw", "head_pitch", "eyes_open", "gaze")
_PRIOR_HEADS: dict[str, tuple[dict[str, float], float]] = {
    # AND of the five cues: positive only when every cue holds (margin half a cue).
    "attentive": (dict.fromkeys(_ATTENTION_CUES, 10.0), -10.0 * (len(_ATTENTION_CUES) - 0.5)),
    # Voice activity on the participant's own open mic.
    "speaking": ({"voice": 12.0, "mic_on": 3.0}, -9.0),
    "hand_raised": ({"hand_raised": 10.0}, -5.0),
    "engagement": (
        {
            "face_present": 1.5,
            "head_yaw": 1.0,
            "head_pitch": 0.5,
            "eyes_open": 0.5,
            "gaze": 0.5,
            "voice": 1.0,
            "hand_raised": 1.0,
            "motion": 0.2,
            "camera_on": 0.5,
            # text: asking counts like speaking up; writing in chat a little less
            "asked_question": 1.0,
            "chat_activity": 0.5,
        },
        -3.0,
    ),
}
# Recency of each head's pooling: logit of step t (0 = oldest) is -decay * (T - 1 - t).
_PRIOR_DECAY = {"attentive": 1.0, "speaking": 1.2, "hand_raised": 0.3, "engagement": 0.5}
_EYES_DECAY = 0.4
"""Eyes pool over a flatter window, so a blink does not read as inattention."""

PARAMETERS = ("centre", "log_scale", "direction", "missing_logit", "time_logits", "head_w", "head_b", "conf_w",
              "conf_b")
"""The fusion model's parameters (its ``state_dict`` keys), in the order they are declared."""


@dataclass(frozen=True, kw_only=True)
class FusionLayout:
    """What a set of fusion weights is laid out for: input signals, heads (both in order) and window."""

    signals: tuple[str, ...]
    heads: tuple[str, ...]
    window: int

    def to_dict(self) -> dict[str, object]:
        return {"signals": list(self.signals), "heads": list(self.heads), "window": self.window}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FusionLayout:
        signals, heads, window = data.get("signals"), data.get("heads"), data.get("window")
        if not isinstance(signals, list | tuple) or not isinstance(heads, list | tuple) or not isinstance(window, int):
            raise ValueError("malformed layout (expected signals, heads and window)")
        return cls(signals=tuple(str(x) for x in signals), heads=tuple(str(x) for x in heads), window=window)

    def differences(self, expected: FusionLayout) -> list[str]:
        """What differs from ``expected``, in words (empty when the layouts are the same)."""
        out = _name_differences("signals", self.signals, expected.signals)
        out += _name_differences("heads", self.heads, expected.heads)
        if self.window != expected.window:
            out.append(f"window {self.window} steps (the engine uses {expected.window})")
        return out


def _name_differences(what: str, got: tuple[str, ...], expected: tuple[str, ...]) -> list[str]:
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    out = []
    if missing:
        out.append(f"{what} missing from the file: {', '.join(missing)}")
    if extra:
        out.append(f"{what} unknown to this build: {', '.join(extra)}")
    if not missing and not extra and got != expected:
        i = next(i for i, (n, m) in enumerate(zip(got, expected, strict=True)) if n != m)
        out.append(f"{what} reordered (position {i} is {got[i]} in the file, {expected[i]} in this build)")
    return out


def _logit(p: float) -> float:
    """logit of ``p`` clipped to 1e-4..1-1e-4, computed in float32 (as the torch priors always were)."""
    x = np.float32(min(max(p, 1e-4), 1 - 1e-4))
    return float(np.log(x / (np.float32(1.0) - x)))


def prior_arrays(window: int) -> dict[str, NDArray[np.float32]]:
    """Hand-set parameters (float32, the shapes of the model's ``state_dict``) from documented priors; no training."""
    h, f = len(HEADS), N_SIGNALS
    centre = np.zeros(f, dtype=np.float32)
    log_scale = np.zeros(f, dtype=np.float32)
    direction = np.ones(f, dtype=np.float32)
    missing = np.full(f, _logit(0.0), dtype=np.float32)
    for i, signal in enumerate(INPUTS):  # gate priors, in each signal's own unit (see shared/signals.py)
        g = signal.gate
        centre[i], log_scale[i], direction[i] = g.centre, math.log(g.scale), g.direction
        missing[i] = NO_EVIDENCE_LOGIT if signal.optional else _logit(signal.missing_evidence)
    steps = np.arange(window, dtype=np.float32)
    time_logits = np.zeros((h, f, window), dtype=np.float32)
    head_w = np.zeros((h, f), dtype=np.float32)
    head_b = np.zeros(h, dtype=np.float32)
    for k, head in enumerate(HEADS):
        time_logits[k] = np.float32(-_PRIOR_DECAY[head]) * (window - 1 - steps)
        weights, bias = _PRIOR_HEADS[head]
        for name, w in weights.items():
            head_w[k, IDX[name]] = w
        head_b[k] = bias
    time_logits[0, IDX["eyes_open"]] = np.float32(-_EYES_DECAY) * (window - 1 - steps)
    return {
        "centre": centre,
        "log_scale": log_scale,
        "direction": direction,
        "missing_logit": missing,
        "time_logits": time_logits,
        "head_w": head_w,
        "head_b": head_b,
        "conf_w": np.array([3.0, 2.0], dtype=np.float32),
        "conf_b": np.array(-2.0, dtype=np.float32),
    }


def with_cones(params: dict[str, NDArray[np.float32]], *, yaw_deg: float, pitch_deg: float) -> None:
    """Set the attention cone of the head-pose gates in ``params`` (prior weights only)."""
    params["centre"][IDX["head_yaw"]] = yaw_deg
    params["centre"][IDX["head_pitch"]] = pitch_deg
