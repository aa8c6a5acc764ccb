"""The fusion model: a window of per-step features -> behaviour heads + per-signal contributions.

Architecture (a small, inspectable torch ``nn.Module``, batched across participants):

1. **Evidence gates.** Each input signal ``x_f`` becomes evidence
   ``z_f = sigmoid(direction_f * (x_f - centre_f) / scale_f)`` in 0..1 (learnable centre and
   scale); an unmeasured value takes a learnable "missing" evidence instead.
2. **Temporal pooling.** Per head and signal, a softmax over the window's valid steps
   (learnable logits; padding steps are masked out).
3. **Heads.** ``attentive``, ``speaking``, ``hand_raised``, ``engagement``: a sigmoid of a
   weighted sum of the pooled evidence. ``confidence`` is a sigmoid of the window's
   measurement coverage and how decisive the three boolean heads are.
   The optional signals (text: ``asked_question``, ``chat_activity``) form their own block:
   unmeasured, their evidence is exactly 0 and the core block's arithmetic is unchanged, so a
   participant without interactions scores bit-identically to a model without them.
4. **Contributions.** Integrated gradients of ``engagement`` along a straight path from
   "no evidence" to the actual evidence. For a sigmoid of a linear function this is exact:
   ``c_f = w_f * p_f * (sigmoid(L) - sigmoid(b)) / (L - b)``; they sum to engagement minus
   its no-evidence level.

**Where the default parameters come from.** Nobody trained these defaults on real
classroom data. :func:`prior_state` sets every parameter by hand from published
conventions and this project's design targets: a head-pose cone of +/- 20 deg yaw and
+/- 20 deg pitch around the participant's own baseline (gaze-cone conventions of
head-pose attention studies), an eye aspect ratio of 0.15 for closed eyes (Soukupova &
Cech 2016 use 0.2 on dlib points; mediapipe's points run lower), silero-vad's own 0.5
speech threshold, wrists above the shoulder line for a raised hand, and an AND of the
attention cues. These priors were then checked against generated media (photos placed in
frames and warped, espeak-ng speech in noise; see ``tests/unit/test_inference_*``). The
gate priors are declared with each signal in :mod:`shared.signals` (which also fixes the
input layout); the head priors are below. The model can be retrained with ``classpulse
train`` on labelled timelines; weights saved by it (with their :class:`FusionLayout`)
replace the priors via ``CLASSPULSE_INFERENCE_WEIGHTS_PATH``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shared.signals import FLAG_NAMES, HEAD_NAMES, INPUT_NAMES, INPUTS

SIGNALS: tuple[str, ...] = INPUT_NAMES
"""Input signals, in the order of the feature vector (declared in :data:`shared.signals.INPUTS`)."""
N_SIGNALS = len(SIGNALS)
HEADS: tuple[str, ...] = HEAD_NAMES
"""Behaviour heads, in the order of :attr:`FusionOutput.probs` (the ``head`` outputs of the registry)."""
IDX = {name: i for i, name in enumerate(SIGNALS)}
CORE = tuple(i for i, s in enumerate(INPUTS) if not s.optional)
"""Indices of the signals every participant has (video, audio, context)."""
OPTIONAL = tuple(i for i, s in enumerate(INPUTS) if s.optional)
"""Indices of the optional signals (text): their own block, exactly no evidence while unmeasured."""
NO_EVIDENCE_LOGIT = -200.0
"""Missing-evidence logit of the optional signals: sigmoid() of it is exactly 0.0 in float32 and float64."""
_FLAG_HEADS = [i for i, head in enumerate(HEADS) if head in FLAG_NAMES]
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


@dataclass(frozen=True)
class FusionOutput:
    probs: Tensor
    """(B, len(HEADS)) probabilities of HEADS."""
    confidence: Tensor
    """(B,)"""
    contributions: Tensor
    """(B, N_SIGNALS) contribution of each signal to engagement (probability units)."""


class FusionModel(nn.Module):
    """Window of features (B, T, F) + measured mask -> heads, confidence, contributions."""

    def __init__(self, *, window: int) -> None:
        super().__init__()
        self.window = window
        h, f = len(HEADS), N_SIGNALS
        self.centre = nn.Parameter(torch.zeros(f))
        self.log_scale = nn.Parameter(torch.zeros(f))
        self.register_buffer("direction", torch.ones(f))
        self.missing_logit = nn.Parameter(torch.zeros(f))
        self.time_logits = nn.Parameter(torch.zeros(h, f, window))
        self.head_w = nn.Parameter(torch.zeros(h, f))
        self.head_b = nn.Parameter(torch.zeros(h))
        self.conf_w = nn.Parameter(torch.zeros(2))
        self.conf_b = nn.Parameter(torch.zeros(()))
        # block indices (not parameters, not saved): core signals, optional ones, and the inverse order
        blocks = (*CORE, *OPTIONAL)
        self.register_buffer("core_idx", torch.tensor(CORE, dtype=torch.long), persistent=False)
        self.register_buffer("optional_idx", torch.tensor(OPTIONAL, dtype=torch.long), persistent=False)
        self.register_buffer(
            "block_order", torch.tensor([blocks.index(i) for i in range(f)], dtype=torch.long), persistent=False
        )
        self.load_state_dict(prior_state(window))

    @property
    def layout(self) -> FusionLayout:
        return FusionLayout(signals=SIGNALS, heads=HEADS, window=self.window)

    def set_cones(self, *, yaw_deg: float, pitch_deg: float) -> None:
        """Set the attention cone of the head-pose gates (prior weights only)."""
        with torch.no_grad():
            self.centre[IDX["head_yaw"]] = yaw_deg
            self.centre[IDX["head_pitch"]] = pitch_deg

    def _block(self, idx: Tensor, x: Tensor, measured: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled evidence (B, H, F_block) and its weighted terms (B, H, F_block) of one block of signals.

        Every operation runs on the block's own contiguous tensors, so the core block computes
        exactly (bit for bit) what a model without the optional signals computed.
        """
        direction: Tensor = self.direction  # type: ignore[assignment]
        xb, mb = x.index_select(-1, idx), measured.index_select(-1, idx)
        gate = torch.sigmoid(direction[idx] * (xb - self.centre[idx]) / torch.exp(self.log_scale[idx]))
        evidence = mb * gate + (1 - mb) * torch.sigmoid(self.missing_logit[idx])
        time_logits = self.time_logits.index_select(1, idx)
        logits = time_logits.unsqueeze(0) + torch.log(valid.clamp_min(1e-6))[:, None, None, :]
        weights = torch.softmax(logits, dim=-1)  # (B, H, F_block, T)
        pooled = torch.einsum("bhft,btf->bhf", weights, evidence)
        return pooled, pooled * self.head_w.index_select(1, idx)

    def forward(self, x: Tensor, measured: Tensor, valid: Tensor) -> FusionOutput:
        """``x``/``measured``: (B, T, F) floats; ``valid``: (B, T) 1 for real steps, 0 for padding."""
        core: Tensor = self.core_idx  # type: ignore[assignment]
        optional: Tensor = self.optional_idx  # type: ignore[assignment]
        _, core_terms = self._block(core, x, measured, valid)
        head_logit = core_terms.sum(-1)
        terms = [core_terms]
        if optional.numel():
            _, opt_terms = self._block(optional, x, measured, valid)
            head_logit = head_logit + opt_terms.sum(-1)  # + exactly 0.0 while the optional signals are unmeasured
            terms.append(opt_terms)
        head_logit = head_logit + self.head_b
        probs = torch.sigmoid(head_logit)
        e = HEADS.index("engagement")
        lin = head_logit[:, e] - self.head_b[e]
        base = torch.sigmoid(self.head_b[e])
        safe = torch.where(lin.abs() > 1e-6, lin, torch.ones_like(lin))
        slope = torch.where(lin.abs() > 1e-6, (probs[:, e] - base) / safe, base * (1 - base))
        order: Tensor = self.block_order  # type: ignore[assignment]
        contributions = torch.cat([t[:, e, :] for t in terms], dim=-1).index_select(-1, order) * slope[:, None]
        # coverage: how much of the media was measured (the optional text signals do not dilute it)
        coverage = (measured.index_select(-1, core).mean(-1) * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
        decisive = (2 * probs[:, _FLAG_HEADS] - 1).abs().mean(-1)
        confidence = torch.sigmoid(self.conf_w[0] * coverage + self.conf_w[1] * decisive + self.conf_b)
        return FusionOutput(probs=probs, confidence=confidence, contributions=contributions)


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(min(max(p, 1e-4), 1 - 1e-4))))


def prior_state(window: int) -> dict[str, Tensor]:
    """Hand-set parameters from documented priors (see the module docstring); no training."""
    h, f = len(HEADS), N_SIGNALS
    centre = torch.zeros(f)
    log_scale = torch.zeros(f)
    direction = torch.ones(f)
    missing = torch.full((f,), _logit(0.0))
    for i, signal in enumerate(INPUTS):  # gate priors, in each signal's own unit (see shared/signals.py)
        g = signal.gate
        centre[i], log_scale[i], direction[i] = g.centre, torch.log(torch.tensor(g.scale)), g.direction
        missing[i] = NO_EVIDENCE_LOGIT if signal.optional else _logit(signal.missing_evidence)
    steps = torch.arange(window, dtype=torch.float32)
    time_logits = torch.zeros(h, f, window)
    head_w = torch.zeros(h, f)
    head_b = torch.zeros(h)
    for k, head in enumerate(HEADS):
        time_logits[k] = -_PRIOR_DECAY[head] * (window - 1 - steps)
        weights, bias = _PRIOR_HEADS[head]
        for name, w in weights.items():
            head_w[k, IDX[name]] = w
        head_b[k] = bias
    time_logits[0, IDX["eyes_open"]] = -_EYES_DECAY * (window - 1 - steps)
    return {
        "centre": centre,
        "log_scale": log_scale,
        "direction": direction,
        "missing_logit": missing,
        "time_logits": time_logits,
        "head_w": head_w,
        "head_b": head_b,
        "conf_w": torch.tensor([3.0, 2.0]),
        "conf_b": torch.tensor(-2.0),
    }
