"""Where the fusion model runs: numpy on CPU (no torch), the torch model on CUDA; the device choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from services.inference.fusion_numpy import NumpyFusion
from services.inference.settings import InferenceSettings
from shared.cuda import cuda_available

if TYPE_CHECKING:
    from services.inference.fusion import FusionModel


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without CUDA is an error (torch asked only with a driver)."""
    if choice == "cpu":
        return "cpu"
    available = cuda_available()
    if choice == "cuda" and not available:
        raise RuntimeError("CLASSPULSE_INFERENCE_DEVICE=cuda but no CUDA device is available; use 'auto' or 'cpu'")
    return "cuda" if available else "cpu"


def fusion_needs_torch(settings: InferenceSettings) -> bool:
    """Whether the engine's fusion runs in torch: on CUDA, or with trained weights (a torch file) to read.

    Otherwise it runs in numpy (:class:`~services.inference.fusion_numpy.NumpyFusion`, same outputs to ~1e-6)
    and, with a CPU perception backend, the engine never imports torch.
    """
    return bool(settings.weights_path) or resolve_device(settings.device) == "cuda"


class TorchFusion:
    """The torch fusion model on its device, called like :class:`NumpyFusion` (numpy in, numpy out)."""

    def __init__(self, model: FusionModel, device: str) -> None:
        self.model = model
        self.device = device

    def __call__(self, x: NDArray[np.float32], m: NDArray[np.float32], v: NDArray[np.float32]) -> Fused:
        import torch

        def put(a: NDArray[np.float32]) -> torch.Tensor:
            return torch.from_numpy(a).to(self.device)

        with torch.inference_mode():
            out = self.model(put(x), put(m), put(v))
        return Fused(probs=out.probs.float().cpu().numpy(), confidence=out.confidence.float().cpu().numpy(),
                      contributions=out.contributions.float().cpu().numpy())


@dataclass(frozen=True, slots=True)
class Fused:
    probs: NDArray[np.float32]
    confidence: NDArray[np.float32]
    contributions: NDArray[np.float32]


def load_fusion(s: InferenceSettings, device: str) -> NumpyFusion | TorchFusion:
    """numpy on CPU (no torch); the torch model on CUDA. Trained weights are read with torch either way."""
    if not fusion_needs_torch(s):
        return NumpyFusion.prior(window=s.window_steps, yaw_deg=s.yaw_cone_deg, pitch_deg=s.pitch_cone_deg)
    from services.inference.fusion import FusionModel

    model = FusionModel(window=s.window_steps)
    if s.weights_path:
        from services.inference.training import load_weights

        load_weights(model, s.weights_path)
    else:
        model.set_cones(yaw_deg=s.yaw_cone_deg, pitch_deg=s.pitch_cone_deg)
    if device == "cpu":
        return NumpyFusion.from_state(model.state_dict(), window=s.window_steps)
    return TorchFusion(model.to(device).eval(), device)
