"""The torch perception backend on CUDA gives what it gives on CPU (same weights, same crops)."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.perception import PerceptionRequest
from services.inference.perception_torch import TorchBackend
from shared.testkit.frames import place
from shared.testkit.photos import photo

pytestmark = pytest.mark.gpu


def test_cuda_matches_cpu_on_a_batch_of_photos() -> None:
    frames = [place(photo("grace_hopper")), place(photo("astronaut"), size=300)] * 8
    reqs = [PerceptionRequest(key=str(i), image=f, want_pose=i % 2 == 0) for i, f in enumerate(frames)]
    cpu, gpu = TorchBackend(device="cpu"), TorchBackend(device="cuda")
    cpu.load()
    gpu.load()
    for a, b in zip(cpu.analyze(reqs), gpu.analyze(reqs), strict=True):
        assert a.face is not None and b.face is not None
        assert a.face.landmarks is not None and b.face.landmarks is not None
        assert float(np.abs(a.face.landmarks - b.face.landmarks).max()) < 0.5  # pixels (TF32 convolutions)
        assert (a.pose is None) == (b.pose is None)
