"""Perception backends are chosen by name from settings (one registry; unknown names refused)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.inference import perception_registry as registry
from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionBackend
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.perception_pool import ThreadedPerception
from services.inference.perception_prefetch import PrefetchPerception
from services.inference.settings import InferenceSettings
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.unit


class Whole(NoFaces):
    """A backend without a face/pose split, registered under 'whole' by the tests below."""

    name = "whole"

    def __init__(self) -> None:
        super().__init__()
        self.loaded = False

    def load(self) -> None:
        self.loaded = True


@pytest.fixture
def whole(monkeypatch: pytest.MonkeyPatch) -> None:
    def factory(settings: registry.BackendSettings) -> PerceptionBackend:
        return Whole()

    monkeypatch.setitem(registry.BACKENDS, "whole", registry.BackendSpec("whole", "test backend", factory))


def test_unknown_backend_is_refused_listing_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    known = "known backends: mediapipe, torch"
    with pytest.raises(ValidationError, match=f"unknown perception backend 'tensorrt'; {known}"):
        InferenceSettings(backend="tensorrt")
    monkeypatch.setenv("CLASSPULSE_INFERENCE_BACKEND", "mediapip")
    with pytest.raises(ValidationError, match="unknown perception backend 'mediapip'"):
        InferenceSettings()
    assert "mediapipe" in (InferenceSettings.model_fields["backend"].description or "")


def test_backends_are_built_from_settings() -> None:
    single = registry.build_backend(InferenceSettings(perception_threads=1, detect_width=256, mesh_trackers=3))
    assert isinstance(single, MediapipeBackend) and (single.detect_width, single.mesh_trackers) == (256, 3)
    pool = registry.build_backend(InferenceSettings(perception_threads=3))
    assert isinstance(pool, ThreadedPerception) and pool.name == "mediapipex3"
    prefetch = registry.build_prefetch(InferenceSettings())
    assert isinstance(prefetch, PrefetchPerception) and isinstance(prefetch.inner, MediapipeBackend)


@pytest.mark.usefixtures("whole")
def test_the_engine_loads_the_configured_backend_and_replay_falls_back_without_a_split() -> None:
    settings = InferenceSettings(backend="whole", perception_threads=1)
    assert registry.build_prefetch(settings) is None  # no face/pose split: nothing to run ahead
    engine = InferenceEngine(settings=settings)
    engine.load()
    backend = engine._backend
    assert isinstance(backend, Whole) and backend.loaded
    engine.close()


def test_the_torch_backend_gets_gpu_sized_batches_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.inference.settings import GPU_BATCH_MAX, GPU_BATCH_WAIT_MS

    gpu = InferenceSettings(backend="torch")
    assert (gpu.batch_max, gpu.batch_wait_ms) == (GPU_BATCH_MAX, GPU_BATCH_WAIT_MS)
    assert (InferenceSettings().batch_max, InferenceSettings().batch_wait_ms) == (16, 50.0)
    monkeypatch.setenv("CLASSPULSE_INFERENCE_BACKEND", "torch")
    monkeypatch.setenv("CLASSPULSE_INFERENCE_BATCH_MAX", "48")
    chosen = InferenceSettings()
    assert (chosen.batch_max, chosen.batch_wait_ms) == (48, GPU_BATCH_WAIT_MS)
