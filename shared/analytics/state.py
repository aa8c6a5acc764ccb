"""Mutable per-session state of the aggregation core: samples, buckets, participants.

Plain slotted dataclasses so that a whole session can be snapshotted to JSON-able
dicts (:mod:`shared.analytics.snapshot`) and restored after a restart. Owned by
:class:`shared.analytics.session.SessionAggregator`; nothing else mutates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contracts.events import Role, ScoreEvent


@dataclass(slots=True)
class Sample:
    """The part of one score event the core needs (``ts`` = capture time, epoch s)."""

    ts: float
    seq: int
    event_id: str
    participant: str
    role: Role
    present: bool
    attentive: bool
    speaking: bool
    hand: bool
    camera_on: bool
    engagement: float

    @classmethod
    def of(cls, event: ScoreEvent) -> Sample:
        return cls(
            ts=event.timing.capture_ts,
            seq=event.seq,
            event_id=event.event_id,
            participant=event.participant,
            role=event.role,
            present=event.present,
            attentive=event.attentive,
            speaking=event.speaking,
            hand=event.hand_raised,
            camera_on=event.camera_on,
            engagement=event.engagement,
        )

    def order(self) -> tuple[float, int, str]:
        return (self.ts, self.seq, self.event_id)


@dataclass(slots=True)
class Lifecycle:
    """A pending lifecycle change (``ts`` epoch s)."""

    ts: float
    event_id: str
    participant: str
    role: Role
    kind: str


@dataclass(slots=True)
class Cell:
    """One participant's accumulated figures within one time bucket (times in seconds)."""

    role: Role = "student"
    observed: float = 0.0
    present: float = 0.0
    attentive: float = 0.0
    talk: float = 0.0
    engagement: float = 0.0
    """Engagement weighted by duration (divide by ``observed`` for the mean)."""
    turns: int = 0
    hand_raises: int = 0
    hand_any: bool = False
    hand_last: bool = False
    hand_since: float | None = None
    questions: int = 0
    messages: int = 0
    """Written messages (chat, questions, answers) in the bucket."""


@dataclass(slots=True)
class Participant:
    """One participant's running state and whole-session totals (session times)."""

    role: Role = "student"
    joined_at: float | None = None
    left: bool = False
    last_end: float | None = None
    last_speech_end: float | None = None
    hand: bool = False
    hand_since: float | None = None
    absent_since: float | None = None
    camera_off_since: float | None = None
    camera_off_announced: bool = False
    """The camera-off came from a lifecycle event: only 'camera_on' (not a score) clears it."""
    observed: float = 0.0
    present: float = 0.0
    attentive: float = 0.0
    talk: float = 0.0
    engagement: float = 0.0
    turns: int = 0
    hand_raises: int = 0
    questions: int = 0
    """Questions asked (interaction events; see :attr:`InteractionEvent.asks`)."""
    chat_messages: int = 0
    words_spoken: int = 0
    judged_messages: int = 0
    """Messages/transcripts judged for relevance (``on_topic`` not None)."""
    on_topic_messages: int = 0
    stays: list[list[float]] = field(default_factory=list)
    """Attendance: ``[start, end]`` of each stay in the session (:mod:`shared.analytics.attendance`)."""

    @property
    def interacted(self) -> bool:
        return bool(self.questions or self.chat_messages or self.words_spoken)

    def add(self, cells: list[Cell], *, dur: float, sample: Sample) -> None:
        """Add one sample of duration ``dur`` to this participant's totals and to every cell."""
        accs: list[Participant | Cell] = [self, *cells]
        for acc in accs:
            acc.observed += dur
            if sample.present:
                acc.present += dur
            if sample.attentive:
                acc.attentive += dur
            if sample.speaking:
                acc.talk += dur
            acc.engagement += sample.engagement * dur
