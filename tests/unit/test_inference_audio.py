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
