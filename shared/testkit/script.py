"""The sample class's script, its per-second truth, and agreement of a timeline with that truth.

A script says what the camera shows (a frontal face, the face turned away, nobody) and when
the participant speaks; :func:`truth_timeline` turns it into one row per second and marks the
seconds near a change of each signal, which :func:`agreement` leaves out of the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from shared.contracts.report import TimelineRow

Visual = Literal["frontal", "away", "empty"]
SIGNALS = ("present", "attentive", "speaking")


@dataclass(frozen=True)
class Segment:
    """What the camera shows from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    visual: Visual


@dataclass(frozen=True)
class SpeechSpan:
    """The participant speaks from ``start`` to ``end`` (seconds)."""

    start: float
    end: float


@dataclass(frozen=True)
class SampleScript:
    """A clip's script: visual segments covering ``[0, duration)`` and speech spans."""

    segments: tuple[Segment, ...]
    speech: tuple[SpeechSpan, ...]
    fps: int = 15
    width: int = 640
    height: int = 480
    speech_dbfs: float = -20.0
    noise_dbfs: float = -45.0
    seed: int = 7

    @property
    def duration_s(self) -> float:
        return max(s.end for s in self.segments)

    def visual_at(self, t: float) -> Visual:
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg.visual
        return self.segments[-1].visual

    def speaking_at(self, t: float) -> bool:
        return any(s.start <= t < s.end for s in self.speech)


@dataclass(frozen=True)
class TruthRow:
    """Ground truth for the second ``[t, t+1)`` and whether it lies near a change of each signal."""

    t: float
    present: bool
    attentive: bool
    speaking: bool
    near_boundary: dict[str, bool] = field(default_factory=dict)


def default_script(duration_s: float = 30.0) -> SampleScript:
    """Frontal, away, empty and frontal again, with speech in each of the three visual states."""
    d = float(duration_s)
    cuts = [0.0, d / 3, d * 0.6, d * 0.8, d]
    visuals: list[Visual] = ["frontal", "away", "empty", "frontal"]
    segments = tuple(Segment(round(a, 2), round(b, 2), v) for a, b, v in zip(cuts[:-1], cuts[1:], visuals, strict=True))
    speech = (
        SpeechSpan(round(d * 0.07, 2), round(d * 0.23, 2)),
        SpeechSpan(round(d * 0.40, 2), round(d * 0.53, 2)),
        SpeechSpan(round(d * 0.85, 2), round(d * 0.95, 2)),
    )
    return SampleScript(segments=segments, speech=speech)


def webcam_script(duration_s: float = 20.0, *, width: int = 640, height: int = 360) -> SampleScript:
    """A student at a webcam (the live benchmark's clip): mostly frontal, two glances away, three remarks.

    No empty stretch: a live student stays in frame; looping the clip repeats the pattern.
    """
    d = float(duration_s)
    cuts = [0.0, d * 0.35, d * 0.47, d * 0.8, d * 0.85, d]
    visuals: list[Visual] = ["frontal", "away", "frontal", "away", "frontal"]
    segments = tuple(Segment(round(a, 2), round(b, 2), v) for a, b, v in zip(cuts[:-1], cuts[1:], visuals, strict=True))
    speech = (
        SpeechSpan(round(d * 0.08, 2), round(d * 0.25, 2)),
        SpeechSpan(round(d * 0.52, 2), round(d * 0.72, 2)),
        SpeechSpan(round(d * 0.88, 2), round(d * 0.97, 2)),
    )
    return SampleScript(segments=segments, speech=speech, width=width, height=height)


def truth_timeline(script: SampleScript, *, video: bool = True, audio: bool = True) -> list[TruthRow]:
    """One row per second; state sampled at the middle of the second.

    Without ``video`` nobody is present (or attentive); without ``audio`` nobody speaks.
    """
    pairs = list(zip(script.segments, script.segments[1:], strict=False))
    present_edges = [b.start for a, b in pairs if (a.visual == "empty") != (b.visual == "empty")]
    attentive_edges = [b.start for a, b in pairs if (a.visual == "frontal") != (b.visual == "frontal")]
    speech_edges = [e for s in script.speech for e in (s.start, s.end)]
    rows = []
    for t in range(int(np.ceil(script.duration_s))):
        mid = t + 0.5
        visual = script.visual_at(mid)
        rows.append(
            TruthRow(
                t=float(t),
                present=visual != "empty",
                attentive=visual == "frontal",
                speaking=script.speaking_at(mid),
                near_boundary={
                    "present": _near(t, present_edges),
                    "attentive": _near(t, attentive_edges),
                    "speaking": _near(t, speech_edges),
                },
            )
        )
    if not video:
        rows = [replace(x, present=False, attentive=False) for x in rows]
    if not audio:
        rows = [replace(x, speaking=False) for x in rows]
    return rows


def agreement(truth: list[TruthRow], rows: Sequence[TimelineRow], participant: str | None = None) -> dict[str, float]:
    """Share of seconds where each signal matches the truth, excluding seconds within 1 s of its changes.

    A second missing from ``rows`` counts as a miss.
    """
    by_t = {r.t: r for r in rows if participant is None or r.participant == participant}
    out: dict[str, float] = {}
    for sig in SIGNALS:
        judged = [x for x in truth if not x.near_boundary.get(sig, False)]
        hits = sum(1 for x in judged if x.t in by_t and bool(getattr(by_t[x.t], sig)) == getattr(x, sig))
        out[sig] = hits / len(judged) if judged else 1.0
    return out


def _near(t: int, edges: list[float]) -> bool:
    """True when a change lies less than 1 s from the second ``[t, t+1]``."""
    return any(max(t - e, e - (t + 1), 0.0) < 1.0 for e in edges)
