"""Speech segmenting of the transcribe stage, with a VAD that hears loud windows (virtual audio, no model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from services.inference.features_audio import VadStream
from services.inference.transcribe.model import GAP_S, PACK_S, _packs
from services.inference.transcribe.segments import SegmentRules, SegmentTracker

pytestmark = pytest.mark.unit
RATE = 16000


class LoudVad:
    """Speech probability 0.9 for a window with any sample above 0.1, else 0.0."""

    def __init__(self) -> None:
        self.calls = 0

    def process(self, items: Sequence[tuple[VadStream, NDArray[np.float32]]]) -> list[float]:
        self.calls += 1
        return [0.9 if float(np.abs(w).max()) > 0.1 else 0.0 for _, w in items]


def audio(*parts: tuple[str, float]) -> NDArray[np.float32]:
    """('s', 1.2) = 1.2 s of "speech" (a 0.5 amplitude tone), ('q', 0.3) = quiet."""
    out = []
    for kind, seconds in parts:
        n = int(seconds * RATE)
        wave = 0.5 * np.sin(np.arange(n) * 0.3) if kind == "s" else np.zeros(n)
        out.append(wave.astype(np.float32))
    return np.concatenate(out)


def run(wave: NDArray[np.float32], rules: SegmentRules, *, chunk_s: float = 0.5, t0: float = 0.0):  # type: ignore[no-untyped-def]
    tracker = SegmentTracker(rules=rules)
    vad = LoudVad()
    n = int(chunk_s * RATE)
    out = []
    for i in range(0, wave.size, n):
        out += tracker.feed(wave[i : i + n], t0 + i / RATE, vad)  # type: ignore[arg-type]
    return out, tracker


RULES = SegmentRules(threshold=0.5, hangover_s=0.5, pad_s=0.2, min_speech_s=0.25, max_segment_s=15.0)


def test_a_speech_run_becomes_one_segment_with_padding_and_its_media_times() -> None:
    segments, tracker = run(audio(("q", 2.0), ("s", 1.5), ("q", 2.0)), RULES, t0=10.0)
    assert len(segments) == 1 and not tracker.open
    seg = segments[0]
    assert seg.start == pytest.approx(12.0 - 0.2, abs=0.04)  # pad before the first speech window
    assert seg.end == pytest.approx(13.5 + 0.2, abs=0.04)  # and after the last one
    assert seg.audio.size == pytest.approx((seg.end - seg.start) * RATE, abs=2)
    assert seg.speech_s == pytest.approx(1.5, abs=0.04)


def test_pauses_shorter_than_the_hangover_stay_in_the_segment_longer_ones_split_it() -> None:
    segments, _ = run(audio(("s", 1.0), ("q", 0.3), ("s", 1.0), ("q", 1.0), ("s", 1.0), ("q", 1.0)), RULES)
    assert [round(s.speech_s, 1) for s in segments] == [2.0, 1.0]


def test_a_long_run_is_cut_at_the_cap_and_goes_on_as_the_next_segment() -> None:
    rules = SegmentRules(max_segment_s=4.0)
    segments, _ = run(audio(("s", 10.0), ("q", 1.0)), rules)
    assert len(segments) == 3
    assert all(s.end - s.start <= 4.0 + 1e-6 for s in segments)
    assert segments[1].start == pytest.approx(segments[0].end, abs=0.04)  # contiguous: nothing lost
    assert sum(s.speech_s for s in segments) == pytest.approx(10.0, abs=0.1)


def test_clicks_shorter_than_min_speech_make_no_segment() -> None:
    segments, _ = run(audio(("q", 1.0), ("s", 0.1), ("q", 1.0)), RULES)
    assert segments == []


def test_open_speech_is_returned_by_flush_and_a_gap_in_the_media_closes_it() -> None:
    tracker = SegmentTracker(rules=RULES)
    vad = LoudVad()
    assert tracker.feed(audio(("q", 0.5)), 0.0, vad) == []  # type: ignore[arg-type]
    assert tracker.feed(audio(("s", 0.5)), 0.5, vad) == []  # type: ignore[arg-type]
    assert tracker.open
    closed = tracker.feed(audio(("s", 0.5)), 5.0, vad)  # type: ignore[arg-type]  # 4 s of media missing
    assert len(closed) == 1 and closed[0].end <= 1.0 + 1e-6
    (last,) = tracker.flush()
    assert last.start >= 5.0 - 1e-6 and tracker.flush() == []


def test_chunk_length_does_not_change_the_segments() -> None:
    wave = audio(("q", 0.7), ("s", 1.3), ("q", 0.4), ("s", 0.9), ("q", 1.1), ("s", 2.0), ("q", 1.0))
    a, _ = run(wave, RULES, chunk_s=0.5)
    b, _ = run(wave, RULES, chunk_s=0.37)
    assert [(s.start, s.end) for s in a] == [(s.start, s.end) for s in b]


def test_segments_are_packed_into_whisper_windows_in_order() -> None:
    lengths = [10.0, 10.0, 6.0, 3.0, 29.0, 1.0]
    packs = _packs(lengths)
    assert packs == [[0, 1, 2], [3], [4], [5]]  # 29 s alone: longer than a pack, still transcribed
    assert sum(lengths[i] for i in packs[0]) + GAP_S * 2 <= PACK_S
    assert sum(lengths[i] for i in [0, 1, 2, 3]) + GAP_S * 3 > PACK_S


def test_the_engines_vad_windows_give_the_same_segments_with_one_vad_pass() -> None:
    """Replay: the engine's silero-vad (its own stream, same chunks) supplies each chunk's windows."""
    from services.inference.features_audio import SileroVad, VadWindows
    from shared.testkit.speech import speech_scene

    wave, _ = speech_scene([(0.5, "Good morning everyone."), (3.5, "Can everyone hear me clearly today?")],
                           seconds=7.0, snr_db=10.0, seed=4)
    wave = np.asarray(wave, dtype=np.float32)
    silero = SileroVad()
    silero.load()
    n = int(0.37 * RATE)  # chunks that do not end on window boundaries: samples carry over
    plain, shared = SegmentTracker(rules=RULES), SegmentTracker(rules=RULES)
    engine_stream = VadStream()
    counted = LoudVad()  # must never be asked: every chunk's windows line up

    def windows(chunk: NDArray[np.float32]) -> VadWindows:
        carried = engine_stream.remainder.size
        ((_, probs),) = silero.process_windows([(engine_stream, chunk)])
        return VadWindows(carried=carried, probs=tuple(probs))

    a, b = [], []
    for i in range(0, wave.size, n):
        chunk = wave[i : i + n]
        a += plain.feed(chunk, i / RATE, silero)
        b += shared.feed(chunk, i / RATE, counted, windows(chunk))  # type: ignore[arg-type]
    a += plain.flush()
    b += shared.flush()
    assert counted.calls == 0
    assert a and [(s.start, s.end, s.speech_s) for s in a] == [(s.start, s.end, s.speech_s) for s in b]
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b, strict=True))


def test_windows_that_do_not_line_up_are_not_used() -> None:
    from services.inference.features_audio import VadWindows

    tracker, vad = SegmentTracker(rules=RULES), LoudVad()
    chunk = audio(("s", 0.5))
    tracker.feed(chunk, 0.0, vad, VadWindows(carried=100, probs=(0.0,) * 15))  # type: ignore[arg-type]
    assert vad.calls == 1  # carried samples differ: the tracker ran its own VAD
