"""Speaker attribution of a gallery's mixed audio (no models): score events in, speaking set per tile."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from services.replay.gallery_source import ROOM
from services.replay.gallery_speakers import AttributionRule, SpeakerAttribution
from shared.contracts.events import FeatureSnapshot, ScoreEvent
from shared.contracts.report import ReportParticipant
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit

FPS = 5
CHUNK = 0.5
SECONDS = 8.0
VOICE = (2.0, 5.0)
"""The room has voice from 2 to 5 s."""

Mouth = Callable[[float], float | None]


def _event(pid: str, seq: int, t: float, *, speaking: bool = False, opening: float | None = None) -> ScoreEvent:
    return ScoreEvent(
        event_id=ScoreEvent.make_id("s", pid, seq), session="s", participant=pid, seq=seq, media_time=t,
        present=opening is not None, attentive=False, speaking=speaking, hand_raised=False, engagement=0.5,
        confidence=0.5, features=FeatureSnapshot(mouth_opening=opening), timing=TimingTrail(capture_ts=1000.0 + t),
    )


def still(_t: float) -> float:
    return 0.05


def talking(t: float) -> float:
    """A mouth opening and closing at 1.5 Hz while the room has voice, still otherwise."""
    return 0.05 + (0.2 * abs(math.sin(3 * math.pi * t)) if VOICE[0] <= t < VOICE[1] else 0.0)


def chewing(t: float) -> float:
    return 0.05 + 0.2 * abs(math.sin(3 * math.pi * t))


def _run(mouths: dict[str, Mouth], *, batch_s: float = 1.0, has_audio: bool = True,
         ) -> tuple[SpeakerAttribution, list[ScoreEvent]]:
    """Feed frames and room chunks batch by batch, the room's chunks half a second late (as the engine holds
    them); returns the attribution and its output."""
    stage = SpeakerAttribution(participants=list(mouths), rule=AttributionRule(), has_audio=has_audio, chunk_s=CHUNK)
    frames = [i / FPS for i in range(int(SECONDS * FPS))]
    chunks = [i * CHUNK for i in range(int(SECONDS / CHUNK))] if has_audio else []
    out: list[ScoreEvent] = []
    t = 0.0
    while t < SECONDS:
        batch = [_event(pid, 2 * i, f, opening=fn(f)) for i, f in enumerate(frames) if t <= f < t + batch_s
                 for pid, fn in mouths.items()]
        batch += [_event(ROOM, 2 * i + 1, c, speaking=VOICE[0] <= c < VOICE[1]) for i, c in enumerate(chunks)
                  if t - 0.5 <= c < t + batch_s - 0.5]
        out += stage.feed(batch)
        t += batch_s
    out += stage.flush([_event(ROOM, 2 * i + 1, c, speaking=False) for i, c in enumerate(chunks) if c >= t - 0.5])
    return stage, out


def _speaking(out: list[ScoreEvent], pid: str) -> list[float]:
    return [e.media_time for e in out if e.participant == pid and e.speaking]


def test_the_moving_mouth_gets_the_voice() -> None:
    stage, out = _run({"p1": still, "p2": talking, "p3": chewing})
    assert len(out) == 3 * SECONDS * FPS and all(e.participant != ROOM for e in out)
    assert [e.media_time for e in out] == sorted(e.media_time for e in out)
    said = _speaking(out, "p2")
    assert said and min(said) >= VOICE[0] and max(said) < VOICE[1]
    assert len(said) >= 0.9 * (VOICE[1] - VOICE[0]) * FPS
    assert _speaking(out, "p1") == [] and _speaking(out, "p3") == []  # chewing moves regardless of the voice
    totals = stage.totals
    assert totals.voiced_s == pytest.approx(3.0)
    assert totals.per_participant["p2"].attributed_s >= 2.5
    assert totals.attributed_s + totals.tied_s + totals.no_mouth_s == pytest.approx(totals.voiced_s)
    assert all(e.mic_on for e in out)


def test_two_mouths_moving_with_the_voice_are_a_tie() -> None:
    stage, out = _run({"p1": talking, "p2": talking, "p3": still})
    assert not any(e.speaking for e in out)
    t = stage.totals
    assert t.attributed_s == 0.0 and t.tied_s == pytest.approx(t.voiced_s)
    assert t.per_participant["p1"].tied_s == t.per_participant["p2"].tied_s == pytest.approx(3.0)
    assert t.per_participant["p3"].tied_s == 0.0


def test_no_moving_mouth_leaves_the_voice_unattributed() -> None:
    stage, out = _run({"p1": still, "p2": lambda _t: None})  # p2: no meshed face
    assert not any(e.speaking for e in out)
    assert stage.totals.no_mouth_s == pytest.approx(3.0)


def test_batching_does_not_change_the_outcome() -> None:
    mouths: dict[str, Mouth] = {"p1": still, "p2": talking}
    a = [(e.participant, e.media_time, e.speaking) for e in _run(mouths, batch_s=0.4)[1]]
    b = [(e.participant, e.media_time, e.speaking) for e in _run(mouths, batch_s=3.0)[1]]
    assert a == b


def test_without_sound_events_pass_without_speaking_or_mic() -> None:
    stage, out = _run({"p1": talking}, has_audio=False)
    assert len(out) == SECONDS * FPS and not any(e.speaking or e.mic_on for e in out)
    assert stage.totals.voiced_s == 0.0


def test_gallery_keys_stay_out_of_other_reports() -> None:
    assert ReportParticipant(id="p1").model_dump(mode="json") == {"id": "p1", "role": "student"}
