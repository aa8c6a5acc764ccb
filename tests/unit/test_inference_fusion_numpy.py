"""The numpy fusion (CPU replay without torch) computes what the torch fusion model computes, to a few 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.inference import fusion
from services.inference.fusion_layout import PARAMETERS, prior_arrays
from services.inference.fusion_numpy import NumpyFusion

pytestmark = pytest.mark.unit
TOL = 5e-6
"""The priors: torch and numpy take float32 sums in different orders, and the order depends on the
CPU's kernels (AVX2-only: one probability of 256 off by 1.7e-6; AVX-512 boxes: under 1e-6)."""
TRAINED_TOL = 1e-5
"""Random weights push logits far from 0, where float32 sums taken in another order differ by a few 1e-6."""


def _inputs(batch: int, window: int, seed: int, *, padded: bool, text: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((batch, window, fusion.N_SIGNALS)) * 25).astype(np.float32)
    x[..., fusion.IDX["eyes_open"]] = rng.uniform(0.05, 0.3, (batch, window))  # near the gates' centres too
    x[..., fusion.IDX["face_present"]] = rng.integers(0, 2, (batch, window))
    m = (rng.random((batch, window, fusion.N_SIGNALS)) > 0.3).astype(np.float32)
    if not text:
        m[..., list(fusion.OPTIONAL)] = 0.0
    v = np.ones((batch, window), dtype=np.float32)
    if padded:  # a participant's first steps: the window's oldest steps are padding
        for b in range(batch):
            v[b, : rng.integers(0, window)] = 0.0
    return x, m, v


def _torch(model: fusion.FusionModel, x: np.ndarray, m: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        out = model(torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(v))
    return out.probs.numpy(), out.confidence.numpy(), out.contributions.numpy()


def _assert_same(model: fusion.FusionModel, fast: NumpyFusion, *inputs: np.ndarray, tol: float = TOL) -> None:
    probs, conf, contrib = _torch(model, *inputs)
    out = fast(*inputs)
    assert out.probs.dtype == out.confidence.dtype == out.contributions.dtype == np.float32
    assert out.probs.shape == probs.shape and out.contributions.shape == contrib.shape
    np.testing.assert_allclose(out.probs, probs, atol=tol, rtol=0)
    np.testing.assert_allclose(out.confidence, conf, atol=tol, rtol=0)
    np.testing.assert_allclose(out.contributions, contrib, atol=tol, rtol=0)


@pytest.mark.parametrize(("window", "padded", "text"), [(8, False, False), (8, True, True), (1, False, True),
                                                         (12, True, False)])
def test_priors_agree_with_the_torch_model(window: int, padded: bool, text: bool) -> None:
    model = fusion.FusionModel(window=window).eval()
    model.set_cones(yaw_deg=25.0, pitch_deg=18.0)
    fast = NumpyFusion.prior(window=window, yaw_deg=25.0, pitch_deg=18.0)
    for seed in range(5):
        _assert_same(model, fast, *_inputs(64, window, seed, padded=padded, text=text))


def test_trained_weights_agree_with_the_torch_model() -> None:
    """Any parameters (here random, as training could leave them), taken from the model's state_dict."""
    model = fusion.FusionModel(window=6).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    fast = NumpyFusion.from_state(model.state_dict(), window=6)
    for seed in range(5):
        _assert_same(model, fast, *_inputs(32, 6, 100 + seed, padded=True, text=seed % 2 == 0), tol=TRAINED_TOL)


def test_without_text_the_optional_signals_contribute_exactly_nothing() -> None:
    fast = NumpyFusion.prior(window=8)
    x, m, v = _inputs(16, 8, 3, padded=False, text=False)
    x[..., list(fusion.OPTIONAL)] = 123.0  # unmeasured values are ignored
    out = fast(x, m, v)
    assert np.all(out.contributions[:, list(fusion.OPTIONAL)] == 0.0)
    e = fusion.HEADS.index("engagement")
    lift = out.probs[:, e] - 1 / (1 + np.exp(-prior_arrays(8)["head_b"][e]))
    np.testing.assert_allclose(out.contributions.sum(-1), lift, atol=1e-5)  # contributions sum to the lift


def test_the_torch_priors_are_the_numpy_priors() -> None:
    state = fusion.FusionModel(window=5).state_dict()
    for name, value in prior_arrays(5).items():
        assert np.array_equal(state[name].numpy(), value), name
    assert set(PARAMETERS) == set(state)


def test_parameters_for_another_window_or_incomplete_are_refused() -> None:
    with pytest.raises(ValueError, match="5-step window, not 8"):
        NumpyFusion(prior_arrays(5), window=8)
    params = prior_arrays(5)
    del params["head_w"]
    with pytest.raises(ValueError, match="missing: head_w"):
        NumpyFusion(params, window=5)
