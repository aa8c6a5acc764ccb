"""The torch backend against mediapipe on generated classroom clips, step by step (CPU).

Two scripted clips (Grace Hopper and the astronaut: frontal, turned away, empty, frontal
again, with speech) are analysed at 5 fps by the engine with each backend, and one through
``classpulse replay`` (its report names the backend and device). The steps must
say the same present / attentive / speaking / hand on >= 99 % of steps, and where both
backends meshed a face its landmarks agree within a share of the face width (median over the
frame's 468 mesh points, over frames: 3 % at the median frame, 5 % at the 95th percentile; the
torch mesh is ``face_landmark`` + iris, mediapipe's refined one the attention mesh).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from services.cli import main
from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionBackend, PerceptionRequest, PerceptionResult
from services.inference.perception_mediapipe import MediapipeBackend
from services.inference.perception_torch import TorchBackend
from services.inference.settings import InferenceSettings
from shared.contracts.media import MediaMessage
from shared.contracts.report import AnalysisInfo, Report
from shared.testkit.clips import make_clip
from shared.testkit.frames import SampleFrames
from shared.testkit.messages import chunks, frames
from shared.testkit.photos import PhotoName, photo
from shared.testkit.script import default_script
from shared.testkit.speech import AUDIO_RATE, soundtrack

pytestmark = pytest.mark.integration

SECONDS = 15.0
FPS = 5


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As the worker runs it (``CLASSPULSE_INFERENCE_TORCH_THREADS=1``): CPU torch threads spin against each other
    on a loaded box (25 s vs 290 s for this clip on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recording:
    """A backend that remembers each frame's face landmarks (by the frame's bytes)."""

    def __init__(self, inner: PerceptionBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.faces: dict[str, np.ndarray | None] = {}

    def load(self) -> None:
        self.inner.load()

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        out = self.inner.analyze(requests)
        for req, res in zip(requests, out, strict=True):
            digest = hashlib.blake2b(req.image.tobytes(), digest_size=8).hexdigest()
            self.faces[digest] = res.face.landmarks if res.face is not None else None
        return out

    def forget(self, key: str) -> None:
        self.inner.forget(key)

    def close(self) -> None:
        self.inner.close()


def _clip(name: PhotoName) -> list[MediaMessage]:
    script = default_script(SECONDS)
    maker = SampleFrames(script=script, photo=photo(name))
    n = round(SECONDS * FPS)
    images = [maker.frame(script.visual_at(i / FPS), i / FPS) for i in range(n)]
    msgs: list[MediaMessage] = list(frames(images, session="s", participant="p", fps=FPS))
    msgs += chunks(soundtrack(script), session="s", participant="p", chunk_s=0.5, rate=AUDIO_RATE)
    return sorted(msgs, key=lambda m: (m.media_time, m.kind != "audio"))


def _run(backend: PerceptionBackend, msgs: list[MediaMessage]) -> list[tuple[int, bool, bool, bool, bool]]:
    engine = InferenceEngine(settings=InferenceSettings(perception_threads=1), backend=backend)
    engine.load()
    events = []
    for i in range(0, len(msgs), 16):  # the worker's default micro-batch
        events += engine.process(msgs[i : i + 16])
    events += engine.flush()
    return sorted((e.seq, e.present, e.attentive, e.speaking, e.hand_raised) for e in events)


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_steps_and_landmarks_match_mediapipe(name: PhotoName) -> None:
    msgs = _clip(name)
    ref_backend = Recording(MediapipeBackend(mesh_trackers=0))
    got_backend = Recording(TorchBackend(device="cpu"))
    ref = _run(ref_backend, msgs)
    got = _run(got_backend, msgs)
    assert [r[0] for r in ref] == [g[0] for g in got] and len(ref) >= SECONDS * FPS * 0.9
    for k, signal in enumerate(("present", "attentive", "speaking", "hand"), start=1):
        same = sum(r[k] == g[k] for r, g in zip(ref, got, strict=True)) / len(ref)
        print(name, signal, f"{same:.3f}", "of", len(ref), "steps; true in", sum(r[k] for r in ref))
        assert same >= 0.99, (signal, same)
    for k in (1, 2, 3):  # the clip has faces and empty stretches, attention and not, speech and silence
        assert any(r[k] for r in ref) and not all(r[k] for r in ref), k
    errors = []
    for digest, a in ref_backend.faces.items():
        b = got_backend.faces.get(digest)
        if a is not None and b is not None:
            width = float(a[:, 0].max() - a[:, 0].min())
            errors.append(float(np.median(np.hypot(*(a[:468, :2] - b[:468, :2]).T))) / width)
    print(name, "meshed frames", len(errors), "median error p50/p95", np.percentile(errors, [50, 95]))
    assert len(errors) >= 0.4 * SECONDS * FPS  # frontal 8 of the 15 s
    p50, p95 = np.percentile(errors, [50, 95])
    assert p50 < 0.03 and p95 < 0.05


def test_replay_with_the_torch_backend_reports_it_and_agrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tmp_path / "class.webm"
    make_clip(clip, seconds=8.0, photo="astronaut")
    reports = {}
    for backend in ("mediapipe", "torch"):
        monkeypatch.setenv("CLASSPULSE_INFERENCE_BACKEND", backend)
        monkeypatch.setenv("CLASSPULSE_INFERENCE_DEVICE", "cpu")
        out = tmp_path / backend
        assert main(["replay", str(clip), "--out", str(out), "--no-progress"]) == 0
        reports[backend] = Report.model_validate_json((out / "report.json").read_text())
    assert reports["torch"].analysis == AnalysisInfo(backend="torch", device="cpu")
    assert reports["mediapipe"].analysis == AnalysisInfo(backend="mediapipe", device="cpu")
    rows = {k: [(r.present, r.attentive, r.speaking, r.hand_raised) for r in v.timeline] for k, v in reports.items()}
    assert len(rows["torch"]) == len(rows["mediapipe"]) == 8 and rows["torch"] == rows["mediapipe"]
