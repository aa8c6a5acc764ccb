"""Scripted score timelines: build ScoreEvents from a compact description.

Used by the aggregator tests and benchmarks (and handy for demos): a participant's
behaviour is a function of session time, sampled at a fixed rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shared.contracts.events import LifecycleEvent, LifecycleKind, Role, ScoreEvent
from shared.contracts.timing import TimingTrail


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """What a participant does at one instant."""

    present: bool = True
    attentive: bool = True
    speaking: bool = False
    hand_raised: bool = False
    camera_on: bool = True
    engagement: float = 0.7


BehaviourFn = Callable[[float], Behaviour]


def score_event(
    *, session: str, participant: str, seq: int, t: float, base: float, b: Behaviour, role: Role = "student"
) -> ScoreEvent:
    """One score event at session time ``t`` (capture time ``base + t``)."""
    return ScoreEvent(
        event_id=ScoreEvent.make_id(session, participant, seq),
        session=session,
        participant=participant,
        role=role,
        seq=seq,
        media_time=t,
        present=b.present,
        attentive=b.attentive,
        speaking=b.speaking,
        hand_raised=b.hand_raised,
        camera_on=b.camera_on,
        engagement=b.engagement,
        confidence=0.9,
        timing=TimingTrail(capture_ts=base + t),
    )


def lifecycle_event(
    *, session: str, participant: str, kind: LifecycleKind, t: float, base: float, role: Role = "student"
) -> LifecycleEvent:
    return LifecycleEvent(
        event_id=f"{session}/{participant}/{kind}/{t:.3f}",
        session=session,
        participant=participant,
        role=role,
        kind=kind,
        ts=base + t,
    )


@dataclass(kw_only=True)
class Script:
    """Participants with behaviour functions, sampled every ``step_s`` from ``start`` to ``end``."""

    session: str
    base: float = 1_700_000_000.0
    step_s: float = 0.2
    participants: dict[str, tuple[Role, BehaviourFn, float, float]] = field(default_factory=dict)

    def add(
        self, participant: str, fn: BehaviourFn, *, role: Role = "student", start: float = 0.0, end: float = 60.0
    ) -> Script:
        self.participants[participant] = (role, fn, start, end)
        return self

    def events(self) -> list[ScoreEvent]:
        """Every event, sorted by capture time then participant."""
        out = list(self._iter())
        out.sort(key=lambda e: (e.timing.capture_ts, e.participant))
        return out

    def _iter(self) -> Iterator[ScoreEvent]:
        for pid, (role, fn, start, end) in self.participants.items():
            n = 0
            while True:
                t = round(start + n * self.step_s, 6)
                if t >= end - 1e-9:
                    break
                yield score_event(session=self.session, participant=pid, seq=n, t=t, base=self.base, b=fn(t),
                                  role=role)
                n += 1


def constant(**kwargs: bool | float) -> BehaviourFn:
    """A behaviour that never changes."""
    b = Behaviour(**kwargs)  # type: ignore[arg-type]
    return lambda t: b


def between(t0: float, t1: float, inside: Behaviour, outside: Behaviour | None = None) -> BehaviourFn:
    """``inside`` during [t0, t1), ``outside`` (default Behaviour()) otherwise."""
    other = outside or Behaviour()
    return lambda t: inside if t0 <= t < t1 else other
