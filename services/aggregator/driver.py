"""Drives one :class:`SessionAggregator` per session from raw Kafka records.

Shared by both engines (faust worker and plain aiokafka consumer); the swappable parts
are Protocols: where snapshots live (:class:`SnapshotStore`) and how results leave
(:class:`Emitter`). Order per batch: feed records -> close windows -> emit (and wait for
the broker's ack) -> publish live state -> save the snapshot. A crash after emitting and
before saving re-emits the same events (same ``event_id``) on restart: at least once,
never lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

from shared.analytics.config import AggregationConfig
from shared.analytics.privacy import Erasures, apply_privacy, redact_outputs, redact_summary
from shared.analytics.session import SessionAggregator
from shared.analytics.snapshot import SnapshotError, dump, load
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.privacy import PrivacyEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import summary_key
from shared.log import get_logger, pii
from shared.metrics import Metrics
from shared.transport.base import LiveBus
from shared.transport.live import LivePublisher

_log = get_logger(__name__)
STAGE = "aggregator"
Output = ClassAggregate | Alert
InputKind = Literal["score", "lifecycle", "interaction", "privacy"]
"""What an input record is: by topic (``classpulse.scores``, ``.lifecycle``, ``.interactions``, ``.privacy``)."""


class SnapshotStore(Protocol):
    """Where session snapshots live (a faust table, a dict)."""

    def load(self, session: str) -> bytes | None: ...

    def save(self, session: str, data: bytes) -> None: ...

    def delete(self, session: str) -> None:
        """Forget the session's snapshot (erasure)."""
        ...


class Emitter(Protocol):
    """Sends aggregates and alerts keyed by session; returns once the broker has them."""

    async def emit(self, session: str, events: Sequence[Output]) -> None: ...


class DictStore:
    """Snapshots in a plain dict (tests, the plain engine)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, session: str) -> bytes | None:
        return self.data.get(session)

    def save(self, session: str, data: bytes) -> None:
        self.data[session] = data

    def delete(self, session: str) -> None:
        self.data.pop(session, None)


class SessionDriver:
    """Feeds records to per-session aggregators and publishes what they close."""

    def __init__(
        self,
        *,
        config: AggregationConfig,
        clock: Literal["wall", "event"],
        store: SnapshotStore | None,
        emitter: Emitter,
        metrics: Metrics,
        live: LiveBus | None = None,
        end_grace_s: float = 2.0,
        aggregate_only: bool = False,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store = store
        self._emitter = emitter
        self._metrics = metrics
        self._live_bus = live
        self._live = LivePublisher(bus=live) if live is not None else None
        self._count_score = metrics.messages_total.labels(STAGE, "score")
        self._count_late = metrics.messages_total.labels(STAGE, "score_late")
        self._count_duplicate = metrics.messages_total.labels(STAGE, "score_duplicate")
        self._scores = EventCodec(ScoreEvent)
        self._lifecycle = EventCodec(LifecycleEvent)
        self._interactions = EventCodec(InteractionEvent)
        self._privacy = EventCodec(PrivacyEvent)
        self._aggregate_only = aggregate_only
        """CLASSPULSE_AGGREGATE_ONLY: every session aggregate-only, whatever its own policy says."""
        self.erased: set[str] = set()
        """Sessions erased since the last close (their snapshots are deleted there)."""
        self._erasures = Erasures()
        """When each session was erased: its records from before that (still in flight) are ignored."""
        self.sessions: dict[str, SessionAggregator] = {}
        self._dirty: set[str] = set()
        self._end_grace_s = end_grace_s
        self._last_record = wall_clock()
        self._event_clock = float("-inf")
        self.finished: set[str] = set()
        """Sessions that ended and were flushed (not reloaded by time-driven closes)."""

    def session(self, session: str) -> SessionAggregator:
        """The session's aggregator: cached, restored from its snapshot, or new."""
        agg = self.sessions.get(session)
        if agg is not None:
            return agg
        raw = self._store.load(session) if self._store is not None else None
        if raw is not None:
            try:
                agg = load(raw, config=self._config)
                _log.info("session state %s -> %s (watermark %.3f, late %d, duplicate %d)", "snapshot", "restored",
                          agg.watermark, agg.late_events, agg.duplicate_events, extra=pii(session=session))
            except SnapshotError as exc:
                self._metrics.errors_total.labels(STAGE, "snapshot").inc()
                _log.error("session snapshot unusable, starting empty: %s", exc, extra=pii(session=session))
        if agg is None:
            agg = SessionAggregator(session=session, config=self._config)
        if self._aggregate_only and not agg.privacy.aggregate_only:
            agg.privacy = agg.privacy.model_copy(update={"aggregate_only": True})
        self.sessions[session] = agg
        self._metrics.aggregator_sessions.set(len(self.sessions))
        return agg

    def forget(self) -> None:
        """Drop cached aggregators (partitions moved): they reload from snapshots when needed."""
        self.sessions.clear()
        self._dirty.clear()
        self._metrics.aggregator_sessions.set(0)

    def add(self, kind: InputKind, value: bytes) -> str | None:
        """Feed one record; returns its session (None for an undecodable record, which is counted, or one of an
        erased session from before its erasure, which is ignored)."""
        try:
            if kind == "score":
                score = self._scores.decode(value)
                self._metrics.observe_hop(score.timing, transport="events")
                if self._erasures.before(score.session, score.timing.capture_ts):
                    return None
                agg = self.session(score.session)
                late, dup = agg.late_events, agg.duplicate_events
                agg.add_score(score)
                self._count(agg, late, dup)
                session = score.session
            elif kind == "privacy":
                change = self._privacy.decode(value)
                session = change.session
                self._metrics.messages_total.labels(STAGE, f"privacy_{change.kind}").inc()
                if change.kind == "erased":
                    self.erase(session, at=change.ts)
                    return session
                if self._erasures.before(session, change.ts):
                    return None
                agg = self.session(session)
                apply_privacy(agg, change)
            elif kind == "interaction":
                interaction = self._interactions.decode(value)
                if self._erasures.before(interaction.session, interaction.ts):
                    return None
                agg = self.session(interaction.session)
                counted = agg.add_interaction(interaction)
                self._metrics.messages_total.labels(STAGE, "interaction" if counted else "interaction_duplicate").inc()
                session = interaction.session
            else:
                life = self._lifecycle.decode(value)
                if self._erasures.before(life.session, life.ts):
                    return None
                agg = self.session(life.session)
                agg.add_lifecycle(life)
                self._metrics.messages_total.labels(STAGE, "lifecycle").inc()
                session = life.session
        except DecodeError as exc:
            self._metrics.errors_total.labels(STAGE, "decode").inc()
            _log.warning("aggregator input skipped: %s", exc)
            return None
        self._dirty.add(session)
        self._last_record = wall_clock()
        self._event_clock = max(self._event_clock, agg.watermark)
        return session

    def erase(self, session: str, *, at: float) -> None:
        """Forget everything about ``session`` (a 'erased' privacy event at ``at``) and ignore its records from
        before then; its snapshot goes at the next close."""
        self._erasures.erase(session, at)
        self.sessions.pop(session, None)
        self._dirty.discard(session)
        self.finished.discard(session)
        self.erased.add(session)
        self._metrics.aggregator_sessions.set(len(self.sessions))
        _log.info("session aggregation %s -> %s", "open", "erased", extra=pii(session=session))

    def backlog(self) -> None:
        """Records are known to wait in the input (e.g. read again after a rebalance): it is not drained."""
        self._last_record = wall_clock()

    def _count(self, agg: SessionAggregator, late: int, dup: int) -> None:
        if agg.late_events > late:
            self._count_late.inc()
        elif agg.duplicate_events > dup:
            self._count_duplicate.inc()
        else:
            self._count_score.inc()

    def _now(self, agg: SessionAggregator) -> float:
        return agg.watermark if self._clock == "event" else max(wall_clock(), agg.watermark)

    async def close(self, sessions: Iterable[str], *, received: float) -> int:
        """Close what time allows in ``sessions``; emit, publish live, snapshot. Returns outputs emitted."""
        emitted = 0
        for session in sorted(set(sessions)):
            if session in self.erased:
                self.erased.discard(session)
                if self._store is not None:
                    self._store.delete(session)
                if session not in self.sessions:
                    continue  # nothing came after the erasure
            agg = self.session(session)
            ending = self._ending(agg)
            aggregates, alerts = agg.flush() if ending else agg.advance(self._now(agg))
            aggregates, alerts = redact_outputs(aggregates, alerts, agg.privacy)
            outputs: list[Output] = [*aggregates, *alerts]
            for event in outputs:
                event.timing = event.timing.stamped(STAGE, received=received)
                self._metrics.observe_trail(event.timing, stage=STAGE)
                self._metrics.messages_total.labels(STAGE, "aggregate" if isinstance(event, ClassAggregate)
                                                    else "alert").inc()
            if outputs:
                await self._emitter.emit(session, outputs)
                await self._publish_live(outputs)
                emitted += len(outputs)
            if self._store is not None and (outputs or session in self._dirty):
                started = time.perf_counter()
                self._store.save(session, dump(agg))
                self._metrics.stage_seconds.labels("aggregator_snapshot").observe(time.perf_counter() - started)
                self._dirty.discard(session)
            if ending:
                await self._publish_summary(agg)
                del self.sessions[session]
                self.finished.add(session)
                self._metrics.aggregator_sessions.set(len(self.sessions))
                _log.info("session aggregation %s -> %s (late %d, duplicate %d)", "open", "ended",
                          agg.late_events, agg.duplicate_events, extra=pii(session=session))
        return emitted

    def _ending(self, agg: SessionAggregator) -> bool:
        """Whether an ended session may get its final flush now.

        Scores and lifecycle come from different topics, so 'session_ended' may be read
        long before the last scores (a backlog): flushing at once would make them late.
        Flush when the clock (wall, or the latest score time over all sessions) is
        ``end_grace_s`` past the end, or when no record at all arrived for ``end_grace_s``
        (the input is drained). A session's own scores cannot tell: its last ones may
        still wait behind the current batch.
        """
        if not agg.ended or agg.ended_at is None:
            return agg.ended
        clock = self._event_clock if self._clock == "event" else wall_clock()
        if clock >= agg.ended_at + self._end_grace_s:
            return True
        return wall_clock() - self._last_record >= self._end_grace_s

    async def tick(self) -> int:
        """Time-driven close of every cached session."""
        return await self.close(list(self.sessions), received=wall_clock())

    async def _publish_summary(self, agg: SessionAggregator) -> None:
        if self._live_bus is None:
            return
        try:
            await self._live_bus.set_state(summary_key(agg.session), "summary",
                                           redact_summary(agg.summary(), agg.privacy).model_dump_json().encode())
        except Exception as exc:  # live views are best effort; Kafka has every event
            self._metrics.errors_total.labels(STAGE, "live").inc()
            _log.warning("session summary not written: %s", exc)

    async def _publish_live(self, outputs: Sequence[Output]) -> None:
        if self._live is None:
            return
        try:
            for event in outputs:
                await self._live.publish(event)
        except Exception as exc:  # live views are best effort; Kafka has every event
            self._metrics.errors_total.labels(STAGE, "live").inc()
            _log.warning("live state not written: %s", exc)
