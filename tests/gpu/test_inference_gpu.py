"""Fusion model on CUDA agrees with CPU (skipped without a CUDA device)."""

from __future__ import annotations

import pytest
import torch

from services.inference.fusion import FusionModel
from shared.testkit.features import realistic_inputs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("batch", [1, 64, 256])
def test_fusion_cuda_matches_cpu(batch: int) -> None:
    cpu = FusionModel(window=8).eval()
    gpu = FusionModel(window=8).cuda().eval()
    x, m, v = realistic_inputs(batch, 8, seed=batch)
    with torch.inference_mode():
        a = cpu(x, m, v)
        b = gpu(x.cuda(), m.cuda(), v.cuda())
    assert torch.allclose(a.probs, b.probs.cpu(), atol=1e-4)
    assert torch.allclose(a.confidence, b.confidence.cpu(), atol=1e-4)
    assert torch.allclose(a.contributions, b.contributions.cpu(), atol=1e-4)
