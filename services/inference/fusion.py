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

from services.inference.fusion_layout import (
    CORE,
    FLAG_HEADS,
    HEADS,
    IDX,
    N_SIGNALS,
    NO_EVIDENCE_LOGIT,
    OPTIONAL,
    SIGNALS,
    FusionLayout,
    prior_arrays,
)

__all__ = [
    "CORE", "HEADS", "IDX", "NO_EVIDENCE_LOGIT", "N_SIGNALS", "OPTIONAL", "SIGNALS", "FusionLayout", "FusionModel",
    "FusionOutput", "prior_state",
]
_FLAG_HEADS = FLAG_HEADS


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


def prior_state(window: int) -> dict[str, Tensor]:
    """Hand-set parameters from documented priors (see the module docstring); no training.

    The same arrays :mod:`services.inference.fusion_numpy` starts from
    (:func:`~services.inference.fusion_layout.prior_arrays`).
    """
    return {name: torch.from_numpy(value) for name, value in prior_arrays(window).items()}
