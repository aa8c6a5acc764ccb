"""Fusion-model inputs in the ranges the inference engine produces, for model checks without media."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shared.signals import INPUT_NAMES


def realistic_inputs(
    batch: int, window: int, *, signals: Sequence[str] = INPUT_NAMES, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature windows, masks and valid steps (a mix of present/absent, speech/silence, short windows).

    ``signals`` is the model's input layout (default: the registry's, :mod:`shared.signals`); each named signal below
    must be in it, and every ``mel_*`` signal gets a log-mel level.
    """
    idx = {name: i for i, name in enumerate(signals)}
    rng = np.random.default_rng(seed)
    x = np.zeros((batch, window, len(signals)), np.float32)
    m = np.ones((batch, window, len(signals)), np.float32)
    present = rng.random((batch, window)) > 0.2
    x[..., idx["face_present"]] = present
    x[..., idx["head_yaw"]] = np.abs(rng.normal(0, 18, (batch, window)))
    x[..., idx["head_pitch"]] = np.abs(rng.normal(0, 10, (batch, window)))
    x[..., idx["eyes_open"]] = rng.uniform(0.05, 0.35, (batch, window))
    x[..., idx["gaze"]] = rng.uniform(0, 1, (batch, window))
    x[..., idx["mouth_activity"]] = rng.uniform(0, 0.08, (batch, window))
    x[..., idx["hand_raised"]] = rng.random((batch, window)) > 0.9
    x[..., idx["motion"]] = rng.uniform(0, 0.05, (batch, window))
    x[..., idx["voice"]] = rng.uniform(0, 1, (batch, window))
    x[..., idx["audio_level"]] = rng.uniform(-70, -15, (batch, window))
    x[..., idx["camera_on"]] = 1.0
    x[..., idx["mic_on"]] = 1.0
    for name in signals:
        if name.startswith("mel_"):
            x[..., idx[name]] = rng.uniform(-90, -20, (batch, window))
    for name in ("head_yaw", "head_pitch", "eyes_open", "gaze", "mouth_activity"):
        m[..., idx[name]] = present
    valid = np.ones((batch, window), np.float32)
    for row, pad in enumerate(rng.integers(0, window, batch)):  # young participants have short windows
        valid[row, :pad] = 0.0
    return torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(valid)
