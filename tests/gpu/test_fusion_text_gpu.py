"""On CUDA too, unmeasured text signals leave the fusion model's arithmetic exactly as before them."""

from __future__ import annotations

import pytest
import torch

from services.inference import fusion
from shared.testkit.features import realistic_inputs

from ..unit.test_inference_text import CORE, _pre_text_forward

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("batch", [1, 64, 256])
def test_unmeasured_text_is_bit_identical_to_the_pre_text_model_on_cuda(batch: int) -> None:
    model = fusion.FusionModel(window=8).cuda().eval()
    x, m, v = (t.cuda() for t in realistic_inputs(batch, 8, seed=batch))
    m[..., list(fusion.OPTIONAL)] = 0.0
    with torch.inference_mode():
        out = model(x, m, v)
        probs, conf, contrib = _pre_text_forward(model, x, m, v)
    assert torch.equal(out.probs, probs) and torch.equal(out.confidence, conf)
    assert torch.equal(out.contributions[:, CORE], contrib)
    assert torch.all(out.contributions[:, list(fusion.OPTIONAL)] == 0.0)
