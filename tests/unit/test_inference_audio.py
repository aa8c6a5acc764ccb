"""Speaking detection: espeak-ng speech in silence and white noise (10 dB, 0 dB SNR) vs the true segments."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.inference.engine import InferenceEngine
from services.inference.perception import PerceptionRequest, PerceptionResult
from services.inference.settings import InferenceSettings
from shared.testkit.messages import chunks
from shared.testkit.speech import segments, speech_scene

pytestmark = pytest.mark.unit

UTTERANCES = [
    (1.0, "Good morning everyone, I have a question about the homework."),
    (7.5, "Yes, I think the answer is forty two."),
]
STEP = 0.1
TOLERANCE = 0.3
MIN_PAUSE = 0.3
"""A pause shorter than this is inside a segment (between words), not a turn change."""


class NoVideo:
    """Perception backend for audio-only tests (never called: no frames)."""

    name = "none"

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        raise AssertionError("no frames in this test")

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


def merged(segs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in segs:
        if out and a - out[-1][1] < MIN_PAUSE:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


@pytest.mark.parametrize("snr_db", [None, 10.0, 0.0])
def test_speaking_segments_within_tolerance_of_truth(snr_db: float | None) -> None:
    engine = InferenceEngine(settings=InferenceSettings(), backend=NoVideo())
    engine.load()
    wave, truth = speech_scene(UTTERANCES, seconds=13.0, snr_db=snr_db, seed=7)
    msgs = chunks(wave, session="a", participant="talker", chunk_s=STEP)
    events = engine.process(msgs[:60]) + engine.process(msgs[60:]) + engine.flush()
    events.sort(key=lambda e: e.media_time)
    assert len(events) == len(msgs)  # one step per chunk for an audio-only participant
    assert all(not e.present and not e.camera_on and e.mic_on for e in events)
    found = merged(segments([e.media_time for e in events], [e.speaking for e in events], STEP))
    assert len(found) == len(truth), (found, truth)
    for (fa, fb), (ta, tb) in zip(found, truth, strict=True):
        assert abs(fa - ta) <= TOLERANCE and abs(fb - tb) <= TOLERANCE, (found, truth)
    assert len({e.event_id for e in events}) == len(events)


def test_torch_thread_count_survives_loading_silero() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        InferenceEngine(settings=InferenceSettings(), backend=NoVideo()).load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_other_sample_rates_are_converted_and_still_detect_speech(rate: int) -> None:
    import numpy as np

    from services.inference.features_audio import to_16k

    wave16, truth = speech_scene([(0.5, "Can everyone hear me clearly today?")], seconds=4.0, snr_db=10.0, seed=3)
    wave = np.interp(np.arange(int(len(wave16) * rate / 16000)) * 16000 / rate, np.arange(len(wave16)), wave16)
    wave = wave.astype(np.float32)
    assert abs(len(to_16k(wave[:rate], rate)) - 16000) <= 1
    engine = InferenceEngine(settings=InferenceSettings(), backend=NoVideo())
    engine.load()
    msgs = chunks(wave, session="a", participant=f"sr{rate}", chunk_s=0.25, rate=rate)
    events = sorted(engine.process(msgs) + engine.flush(), key=lambda e: e.media_time)
    (start, end) = truth[0]
    inside = [e.speaking for e in events if start + 0.3 <= e.media_time <= end - 0.5]
    outside = [e.speaking for e in events if e.media_time + 0.25 <= start - 0.2 or e.media_time >= end + 0.5]
    assert inside and sum(inside) / len(inside) > 0.8
    assert outside and not any(outside)


@pytest.mark.parametrize(("n_freqs", "f_min", "f_max", "n_mels"), [(201, 50.0, 7600.0, 8), (257, 0.0, 8000.0, 40)])
def test_the_numpy_mel_filterbank_is_torchaudios(n_freqs: int, f_min: float, f_max: float, n_mels: int) -> None:
    import numpy as np
    import torchaudio.functional as taf

    from services.inference.features_audio import mel_filterbank

    theirs = taf.melscale_fbanks(n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels, sample_rate=16000).numpy()
    ours = mel_filterbank(n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels, sample_rate=16000)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_a_cpu_engine_and_its_audio_features_never_import_torch() -> None:
    """In a fresh process (this one has torch loaded): load, VAD, log-mel and fusion of a few chunks."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from services.inference.engine import InferenceEngine\n"
        "from services.inference.settings import InferenceSettings\n"
        "from shared.testkit.messages import chunks\n"
        "from shared.testkit.speech import speech_scene\n"
        "class NoVideo:\n"
        "    name = 'none'\n"
        "    def load(self): return None\n"
        "    def forget(self, key): return None\n"
        "    def close(self): return None\n"
        "wave, _ = speech_scene([(0.5, 'Hello there')], seconds=2.0, snr_db=10.0, seed=1)\n"
        "engine = InferenceEngine(settings=InferenceSettings(device='cpu'), backend=NoVideo())\n"
        "engine.load()\n"
        "msgs = chunks(wave, session='a', participant='p', chunk_s=0.25)\n"
        "for m in msgs:\n"
        "    engine.prepare_audio(m)\n"
        "events = engine.process(msgs) + engine.flush()\n"
        "assert len(events) == len(msgs), len(events)\n"
        "loaded = sorted(m for m in ('torch', 'torchaudio', 'silero_vad') if m in sys.modules)\n"
        "print('loaded:', loaded)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "loaded: []"
