"""The fusion model evaluated with numpy: the torch model's arithmetic on its own parameters, no torch.

:class:`NumpyFusion` computes what :class:`services.inference.fusion.FusionModel` computes
(evidence gates, temporal softmax pooling per head and signal, sigmoid heads, integrated-gradient
contributions, confidence) in float32 from the same parameters (:func:`prior_arrays`, or a
trained model's ``state_dict`` via :meth:`NumpyFusion.from_state`); outputs agree with the torch
model's to about 1e-6 (``tests/unit/test_inference_fusion_numpy.py``). The engine uses it on
CPU, so a CPU replay never imports torch (about 0.6 GiB of memory and a second of start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.inference.fusion_layout import (
    CORE,
    FLAG_HEADS,
    HEADS,
    OPTIONAL,
    PARAMETERS,
    prior_arrays,
    with_cones,
)

F32 = NDArray[np.float32]
_ENGAGEMENT = HEADS.index("engagement")


def _sigmoid(x: F32) -> F32:
    """Logistic function without overflow (exp of a non-positive number only)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class NumpyFusionOutput:
    probs: F32
    """(B, len(HEADS)) probabilities of HEADS."""
    confidence: F32
    """(B,)"""
    contributions: F32
    """(B, N_SIGNALS) contribution of each signal to engagement (probability units)."""


@dataclass(frozen=True)
class _Block:
    """One block of signals (core or optional), its parameters sliced once."""

    idx: NDArray[np.intp]
    direction: F32
    centre: F32
    inv_scale: F32
    missing: F32
    """sigmoid(missing_logit) of the block's signals."""
    time_logits: F32
    """(H, F_block, T)"""
    head_w: F32
    """(H, F_block)"""


class NumpyFusion:
    """Window of features (B, T, F) + measured mask + valid steps -> heads, confidence, contributions."""

    def __init__(self, params: Mapping[str, NDArray[Any]], *, window: int) -> None:
        missing = [p for p in PARAMETERS if p not in params]
        if missing:
            raise ValueError(f"fusion parameters missing: {', '.join(missing)}")
        p = {k: np.asarray(params[k], dtype=np.float32) for k in PARAMETERS}
        if p["time_logits"].shape[-1] != window:
            raise ValueError(f"fusion parameters are for a {p['time_logits'].shape[-1]}-step window, not {window}")
        self.window = window
        self._blocks = [self._block(p, idx) for idx in (CORE, OPTIONAL) if idx]
        order = [i for block in self._blocks for i in block.idx.tolist()]
        self._order = np.argsort(np.asarray(order))  # block-concatenated columns -> signal order
        self._core = np.asarray(CORE, dtype=np.intp)
        self._head_b = p["head_b"]
        self._conf_w = p["conf_w"]
        self._conf_b = p["conf_b"]
        self._base = float(_sigmoid(self._head_b[_ENGAGEMENT : _ENGAGEMENT + 1])[0])

    @staticmethod
    def _block(p: dict[str, F32], signals: tuple[int, ...]) -> _Block:
        idx = np.asarray(signals, dtype=np.intp)
        return _Block(
            idx=idx, direction=p["direction"][idx], centre=p["centre"][idx],
            inv_scale=(1.0 / np.exp(p["log_scale"][idx])).astype(np.float32),
            missing=_sigmoid(p["missing_logit"][idx]), time_logits=np.ascontiguousarray(p["time_logits"][:, idx, :]),
            head_w=np.ascontiguousarray(p["head_w"][:, idx]),
        )

    @classmethod
    def prior(cls, *, window: int, yaw_deg: float | None = None, pitch_deg: float | None = None) -> NumpyFusion:
        """The built-in priors (:func:`prior_arrays`), with the head-pose cone set when both angles are given."""
        params = prior_arrays(window)
        if yaw_deg is not None and pitch_deg is not None:
            with_cones(params, yaw_deg=yaw_deg, pitch_deg=pitch_deg)
        return cls(params, window=window)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, window: int) -> NumpyFusion:
        """From a torch model's ``state_dict`` (tensors: moved to CPU numpy) or numpy arrays."""
        arrays = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state.items()}
        return cls(arrays, window=window)

    def _terms(self, b: _Block, x: F32, measured: F32, log_valid: F32) -> F32:
        """Weighted pooled evidence (B, H, F_block) of one block."""
        xb, mb = x[..., b.idx], measured[..., b.idx]
        gate = _sigmoid(b.direction * (xb - b.centre) * b.inv_scale)
        evidence = mb * gate + (1 - mb) * b.missing  # (B, T, Fb)
        logits = b.time_logits[None] + log_valid[:, None, None, :]  # (B, H, Fb, T)
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=-1, keepdims=True)
        pooled: F32 = np.einsum("bhft,btf->bhf", weights, evidence)
        return (pooled * b.head_w).astype(np.float32, copy=False)

    def __call__(self, x: NDArray[Any], measured: NDArray[Any], valid: NDArray[Any]) -> NumpyFusionOutput:
        """``x``/``measured``: (B, T, F); ``valid``: (B, T) 1 for real steps, 0 for padding."""
        x = np.asarray(x, dtype=np.float32)
        measured = np.asarray(measured, dtype=np.float32)
        valid = np.asarray(valid, dtype=np.float32)
        log_valid = np.log(np.maximum(valid, np.float32(1e-6)))
        terms = [self._terms(b, x, measured, log_valid) for b in self._blocks]
        head_logit = terms[0].sum(-1)
        for t in terms[1:]:
            head_logit = head_logit + t.sum(-1)  # + exactly 0.0 while the optional signals are unmeasured
        head_logit = head_logit + self._head_b
        probs = _sigmoid(head_logit)
        e = _ENGAGEMENT
        lin = head_logit[:, e] - self._head_b[e]
        base = np.float32(self._base)
        big = np.abs(lin) > 1e-6
        safe = np.where(big, lin, np.float32(1.0))
        slope = np.where(big, (probs[:, e] - base) / safe, base * (1 - base)).astype(np.float32)
        contributions = np.concatenate([t[:, e, :] for t in terms], axis=-1)[:, self._order] * slope[:, None]
        coverage = (measured[..., self._core].mean(-1) * valid).sum(-1) / np.maximum(valid.sum(-1), np.float32(1.0))
        decisive = np.abs(2 * probs[:, FLAG_HEADS] - 1).mean(-1)
        confidence = _sigmoid(self._conf_w[0] * coverage + self._conf_w[1] * decisive + self._conf_b)
        return NumpyFusionOutput(probs=probs, confidence=confidence.astype(np.float32, copy=False),
                                 contributions=contributions.astype(np.float32, copy=False))
