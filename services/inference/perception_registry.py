"""Perception backends by name: ``CLASSPULSE_INFERENCE_BACKEND`` picks one.

Each backend is declared once in :data:`BACKENDS` with a factory that builds one instance
from the inference settings (:class:`~services.inference.settings.InferenceSettings`, which
validates its ``backend`` against these names); the factory imports its implementation only
when called, so reading settings never loads a model library. The engine builds its backend
with :func:`build_backend` (``perception_threads`` instances in threads when above 1); file
replay wraps one instance in :class:`~services.inference.perception_prefetch.PrefetchPerception`
via :func:`build_prefetch`. ``torch`` (:mod:`services.inference.perception_torch`) batches a
whole micro-batch on the inference device; it is built as one instance (never threaded: a GPU
wants one big batch, not several small ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.inference.perception import PerceptionBackend, SplitBackend
from services.inference.perception_prefetch import PrefetchPerception
from shared.contracts.report import AnalysisInfo


class BackendSettings(Protocol):
    """What a backend is built from: ``InferenceSettings`` (a Protocol, so settings may import this module)."""

    @property
    def backend(self) -> str: ...

    @property
    def perception_threads(self) -> int: ...

    @property
    def detect_width(self) -> int: ...

    @property
    def mesh_trackers(self) -> int: ...

    @property
    def device(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A perception backend: its settings name, what it is, and how to build one instance."""

    name: str
    description: str
    factory: Callable[[BackendSettings], PerceptionBackend]
    device: Callable[[BackendSettings], str] = lambda _settings: "cpu"
    """Where an instance would run, without building it (``check-config``, ``/metrics``, the report)."""
    uses_torch: bool = False
    """The backend imports torch (its process then sets torch's thread count)."""


def _mediapipe(settings: BackendSettings) -> PerceptionBackend:
    from services.inference.perception_mediapipe import MediapipeBackend

    return MediapipeBackend(detect_width=settings.detect_width, mesh_trackers=settings.mesh_trackers)


def _torch(settings: BackendSettings) -> PerceptionBackend:
    from services.inference.perception_torch import TorchBackend

    return TorchBackend(detect_width=settings.detect_width, device=settings.device)


def _torch_device(settings: BackendSettings) -> str:
    from services.inference.perception_torch import resolve_device

    return resolve_device(settings.device)


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            name="mediapipe",
            description="CPU reference: BlazeFace full range, face mesh with iris, BlazePose (mediapipe 0.10.14)",
            factory=_mediapipe,
        ),
        BackendSpec(
            name="torch",
            description="GPU-batched: the same mediapipe 0.10.14 weights run as torch modules, each stage once per "
            "micro-batch on the inference device (CUDA when present; meant for GPUs, slower than mediapipe on CPU)",
            factory=_torch,
            device=_torch_device,
            uses_torch=True,
        ),
    )
}
"""Every known backend, by the name ``CLASSPULSE_INFERENCE_BACKEND`` takes."""


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def spec_for(name: str) -> BackendSpec:
    """The backend called ``name``; a readable error listing the known ones otherwise."""
    spec = BACKENDS.get(name)
    if spec is None:
        raise ValueError(f"unknown perception backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return spec


def analysis_for(settings: BackendSettings) -> AnalysisInfo:
    """The backend ``settings`` choose and the device it would run on (builds nothing)."""
    spec = spec_for(settings.backend)
    return AnalysisInfo(backend=spec.name, device=spec.device(settings))


def build_backend(settings: BackendSettings) -> PerceptionBackend:
    """The engine's backend: ``settings.backend``, in ``perception_threads`` parallel instances when above 1."""
    spec = spec_for(settings.backend)
    if settings.perception_threads > 1 and spec.name != "torch":
        from services.inference.perception_pool import ThreadedPerception

        return ThreadedPerception(factory=lambda: spec.factory(settings), workers=settings.perception_threads)
    return spec.factory(settings)


def build_prefetch(settings: BackendSettings) -> PrefetchPerception | None:
    """One ``settings.backend`` instance with its face chain run ahead in a thread (file replay).

    None when the backend has no face/pose split; the engine then builds its own backend.
    """
    inner = spec_for(settings.backend).factory(settings)
    return PrefetchPerception(inner=inner) if isinstance(inner, SplitBackend) else None
