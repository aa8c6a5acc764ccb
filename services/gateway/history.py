"""The gateway's memory of sessions, read from the event log (scores, aggregates, alerts, lifecycle,
interactions).

It backs the REST history routes (sessions, participants, timelines, aggregates,
alerts, reports), the live rows' interaction counts, and feeds the class-analytics gauges for
Grafana. Events are at-least-once: scores dedupe on their ``event_id`` among the participant's
latest ``RECENT_SCORES`` (order-free: an audio-only step, or a reconnect's next epoch, may carry a
smaller seq than the last step), the rest on ``event_id``.
Interaction text is never kept here (only the counts derived from it).
Privacy changes (``classpulse.privacy``) apply here too: an opted-out participant's scores are not
kept (their presence stays, as status ``opted_out``), an erased session is forgotten and events
from before its erasure are ignored, and sessions idle for longer than the retention are forgotten.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from shared.analytics.config import AggregationConfig
from shared.analytics.privacy import Erasures, apply_privacy
from shared.analytics.session import SessionAggregator
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, Role, ScoreEvent
from shared.contracts.interactions import InteractionCounts, InteractionEvent
from shared.contracts.privacy import PrivacyEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, PRIVACY, SCORES
from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import EventBus, EventConsumer, EventRecord

_log = get_logger(__name__)

RECENT_SCORES = 4096
"""Score ids remembered per participant for dedupe: ~13 min at 5 steps/s, far longer than a redelivery."""
_CODECS: dict[str, EventCodec[BaseModel]] = {
    t.name: EventCodec(t.model)  # type: ignore[misc]
    for t in (SCORES, AGGREGATES, ALERTS, LIFECYCLE, INTERACTIONS, PRIVACY)
}


@dataclass
class ParticipantRecord:
    role: Role
    first_seen: float
    last_seen: float
    status: str = "active"
    media_time: float = 0.0
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Ids of this participant's latest ``RECENT_SCORES`` scores: a redelivered one is dropped."""

    def first_time(self, event_id: str) -> bool:
        """True (and remembered) unless ``event_id`` is among the recent scores."""
        if event_id in self.recent:
            return False
        self.recent[event_id] = None
        if len(self.recent) > RECENT_SCORES:
            self.recent.popitem(last=False)
        return True


@dataclass
class SessionRecord:
    """Everything the gateway remembers about one session."""

    id: str
    started: float
    max_aggregates: int
    timeline: TimelineBuilder
    aggregator: SessionAggregator
    last_event: float = 0.0
    ended: bool = False
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)
    aggregates: deque[ClassAggregate] = field(default_factory=deque)
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=1000))
    scores: int = 0
    interactions: int = 0
    """Interaction events counted (repeats excluded)."""
    lifecycle: dict[str, LifecycleEvent] = field(default_factory=dict)
    """Latest lifecycle change per participant (joined, left, camera off ...)."""
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was handled already (remembers the last 10,000 ids)."""
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        return False

    def duration_s(self) -> float:
        return max((p.media_time for p in self.participants.values()), default=0.0)


class SessionHistory:
    """Sessions, participants, timelines, aggregates and alerts, bounded in memory."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        max_sessions: int,
        max_rows: int,
        max_aggregates: int,
        class_window_s: float = 1.0,
        aggregation: AggregationConfig | None = None,
        retention_s: float | None = None,
    ) -> None:
        self._metrics = metrics
        self._retention_s = retention_s
        self._erased = Erasures()
        self._next_sweep = 0.0
        self._class_window_s = class_window_s
        self._aggregation = aggregation or AggregationConfig()
        self._max_sessions = max_sessions
        self._max_rows = max_rows
        self._max_aggregates = max_aggregates
        self._sessions: OrderedDict[str, SessionRecord] = OrderedDict()

    def get(self, session: str) -> SessionRecord | None:
        return self._sessions.get(session)

    def _session(self, session: str) -> SessionRecord:
        record = self._sessions.get(session)
        if record is None:
            record = SessionRecord(
                id=session,
                started=wall_clock(),
                max_aggregates=self._max_aggregates,
                timeline=TimelineBuilder(max_rows=self._max_rows),
                aggregator=SessionAggregator(session=session, config=self._aggregation),
            )
            self._sessions[session] = record
            while len(self._sessions) > self._max_sessions:
                old, _ = self._sessions.popitem(last=False)
                self._forget_gauges(old)
        record.last_event = wall_clock()
        return record

    def apply(self, event: BaseModel) -> None:
        """Fold one event into the history."""
        if isinstance(event, PrivacyEvent):
            self.privacy(event)
            return
        if isinstance(event, LifecycleEvent | InteractionEvent):
            when = (event.session, event.ts)
        elif isinstance(event, ScoreEvent | ClassAggregate | Alert):
            when = (event.session, event.timing.capture_ts)
        else:
            return
        if self._erased.before(*when):
            return
        if isinstance(event, ScoreEvent):
            self._score(event)
        elif isinstance(event, ClassAggregate):
            self._aggregate(event)
        elif isinstance(event, Alert):
            record = self._session(event.session)
            if not record.seen(event.event_id):
                record.alerts.append(event)
        elif isinstance(event, LifecycleEvent):
            self._lifecycle(event)
        elif isinstance(event, InteractionEvent):
            self.interaction(event)

    def privacy(self, event: PrivacyEvent) -> bool:
        """Apply a privacy change: opt-out/in, mode, or erasure (the session is forgotten); False for a repeat."""
        if event.kind == "erased":
            self.erase(event.session, at=event.ts)
            return True
        if self._erased.before(event.session, event.ts):
            return False
        record = self._session(event.session)
        if record.seen(event.event_id):
            return False
        apply_privacy(record.aggregator, event)
        if event.kind == "opted_out" and event.participant:
            record.timeline.forget(event.participant)  # no scores are kept for them, earlier ones neither
        part = record.participants.get(event.participant or "")
        if part is not None:
            part.status = "opted_out" if record.aggregator.privacy.is_opted_out(event.participant or "") else (
                "active" if part.status == "opted_out" else part.status)
        return True

    def erase(self, session: str, *, at: float) -> bool:
        """Forget ``session`` and ignore its events from before ``at``; whether it was known."""
        self._erased.erase(session, at)
        record = self._sessions.pop(session, None)
        if record is not None:
            self._forget_gauges(session)
        return record is not None

    def sweep(self, now: float) -> int:
        """Forget sessions without an event for longer than the retention; how many."""
        if self._retention_s is None or now < self._next_sweep:
            return 0
        self._next_sweep = now + min(60.0, self._retention_s / 10)
        old = [s for s, r in self._sessions.items() if now - r.last_event > self._retention_s]
        for session in old:
            del self._sessions[session]
            self._forget_gauges(session)
        return len(old)

    def interaction(self, event: InteractionEvent) -> InteractionCounts | None:
        """Count one interaction; the participant's totals after it, or None for a repeat."""
        if self._erased.before(event.session, event.ts):
            return None
        record = self._session(event.session)
        if not record.aggregator.add_interaction(event):
            return None
        part = self._participant(record, event.participant, event.role, event.ts)
        part.last_seen = max(part.last_seen, event.ts)
        record.interactions += 1
        return record.aggregator.interaction_counts(event.participant)

    def _participant(self, record: SessionRecord, pid: str, role: Role, ts: float) -> ParticipantRecord:
        part = record.participants.get(pid)
        if part is None:
            part = record.participants[pid] = ParticipantRecord(role=role, first_seen=ts, last_seen=ts)
        return part

    def _score(self, event: ScoreEvent) -> None:
        record = self._session(event.session)
        ts = event.timing.capture_ts
        part = self._participant(record, event.participant, event.role, ts)
        if record.aggregator.privacy.is_opted_out(event.participant):
            part.status = "opted_out"  # presence only: no score, row or media time is kept
            return
        if not part.first_time(event.event_id):
            return
        part.last_seen = max(part.last_seen, ts)
        part.media_time = max(part.media_time, event.media_time)
        left = record.lifecycle.get(event.participant)
        if left is None or left.kind != "left" or left.ts < ts:  # scores and `left` come on two topics:
            part.status = "active"  # a score captured before the participant left does not bring them back
        record.scores += 1
        record.timeline.add(event)
        record.aggregator.add_score(event)

    def _aggregate(self, event: ClassAggregate) -> None:
        window = event.window
        if window.kind != "tumbling" or abs(window.size_s - self._class_window_s) > 1e-9:
            return  # the class timeline and gauges follow one window size
        record = self._session(event.session)
        if record.seen(event.event_id):
            return
        record.aggregates.append(event)
        while len(record.aggregates) > record.max_aggregates:
            record.aggregates.popleft()
        m, s = self._metrics, event.session
        m.class_engagement.labels(s).set(event.engagement_mean)
        m.class_attentive_ratio.labels(s).set(event.attentive_ratio)
        m.class_participants.labels(s, "total").set(event.participants_total)
        m.class_participants.labels(s, "present").set(event.participants_present)
        m.class_teacher_talk_share.labels(s).set(event.teacher_talk_share)
        for role in ("student", "teacher"):
            talk = sum(p.talk_time_s for p in event.participants.values() if p.role == role)
            m.talk_seconds_total.labels(s, role).inc(talk)
        m.class_questions_total.labels(s, "student").inc(event.questions_students)
        m.class_questions_total.labels(s, "teacher").inc(event.questions_teacher)
        m.class_chat_messages_total.labels(s).inc(event.chat_messages)
        m.class_participation_equity_gini.labels(s).set(event.participation_equity_gini)
        if event.response_latency_s is not None:
            m.class_response_latency_seconds.labels(s).set(event.response_latency_s)

    def _lifecycle(self, event: LifecycleEvent) -> None:
        record = self._session(event.session)
        if record.seen(event.event_id):
            return
        record.aggregator.add_lifecycle(event)
        if event.kind == "session_ended":
            record.ended = True
            return
        part = self._participant(record, event.participant, event.role, event.ts)
        part.last_seen = max(part.last_seen, event.ts)
        current = record.lifecycle.get(event.participant)
        if current is None or current.ts <= event.ts:
            record.lifecycle[event.participant] = event
            part.status = {"joined": "active", "left": "left"}.get(event.kind, part.status)
        if record.aggregator.privacy.is_opted_out(event.participant) and part.status == "active":
            part.status = "opted_out"

    def _forget_gauges(self, session: str) -> None:
        m = self._metrics
        for gauge in (m.class_engagement, m.class_attentive_ratio, m.class_teacher_talk_share,
                      m.class_participation_equity_gini, m.class_response_latency_seconds):
            try:
                gauge.remove(session)
            except KeyError:
                pass
        for state in ("total", "present"):
            try:
                m.class_participants.remove(session, state)
            except KeyError:
                pass

    def sessions(self) -> list[SessionRecord]:
        return list(self._sessions.values())

    def settle(self) -> None:
        """Let each session's aggregation close what its event clock allows (bounds its buffers);
        forget sessions past the retention."""
        self.sweep(wall_clock())
        for record in self._sessions.values():
            if record.aggregator.watermark > 0:
                record.aggregator.advance(record.aggregator.watermark)


class HistoryReader:
    """Consumes the event topics into a :class:`SessionHistory` (a background task)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        history: SessionHistory,
        metrics: Metrics,
        group: str,
        on_lifecycle: Callable[[LifecycleEvent], None] | None = None,
        on_interaction: Callable[[InteractionEvent, InteractionCounts], None] | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        prepare: Callable[[InteractionEvent], InteractionEvent] | None = None,
        on_privacy: Callable[[PrivacyEvent], None] | None = None,
    ) -> None:
        self._new_consumer: Callable[[], EventConsumer] = lambda: (
            bus.consumer([t for t in _CODECS], group=group, from_beginning=True)
        )
        self._history = history
        self._on_lifecycle = on_lifecycle
        self._on_interaction = on_interaction
        self._on_alert = on_alert
        self._prepare = prepare
        self._on_privacy = on_privacy
        """The text stage for events that arrive with text (Kafka-direct producers): derive, drop the text."""
        self._metrics = metrics
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Read until cancelled; each run makes a fresh consumer, so a supervisor can restart it after a
        broker error (it continues from the group's committed offsets; the history dedupes)."""
        self._consumer: EventConsumer = self._new_consumer()
        await self._consumer.start()
        _log.info("history reader state %s -> %s", "starting", "running")
        self.ready.set()
        try:
            while True:
                records = await self._consumer.poll(max_records=500, timeout_ms=500)
                for record in records:
                    self._handle(record)
                if records:
                    self._history.settle()
                    await self._consumer.commit()
        finally:
            await self._consumer.close()
            _log.info("history reader state %s -> %s", "running", "stopped")

    def _handle(self, record: EventRecord) -> None:
        try:
            event = _CODECS[record.topic].decode(record.value)
        except DecodeError as exc:
            self._metrics.errors_total.labels("gateway", "decode").inc()
            _log.warning("history event skipped on %s: %s", record.topic, exc)
            return
        self._metrics.messages_total.labels("gateway", record.topic.rsplit(".", 1)[-1]).inc()
        if isinstance(event, InteractionEvent):
            if self._prepare is not None:
                event = self._prepare(event)
            counts = self._history.interaction(event)
            if counts is not None and self._on_interaction is not None:
                self._on_interaction(event, counts)
            return
        if isinstance(event, PrivacyEvent):
            if self._history.privacy(event) and self._on_privacy is not None and event.kind != "erased":
                self._on_privacy(event)  # once: the gateway that took the change delivered it already
            return
        self._history.apply(event)
        if isinstance(event, LifecycleEvent) and self._on_lifecycle is not None:
            self._on_lifecycle(event)
        elif isinstance(event, Alert) and self._on_alert is not None:
            self._on_alert(event)
