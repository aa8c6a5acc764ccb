"""The aggregator as a faust-streaming worker.

One agent consumes ``classpulse.scores`` and ``classpulse.lifecycle`` (both keyed by
session, co-partitioned) in batches; per batch the :class:`SessionDriver` feeds the
aggregation core, emits closed windows to ``classpulse.aggregates`` and alert changes to
``classpulse.alerts`` (keyed by session, waiting for the broker's ack), publishes them to
Redis for live views, and saves the session's snapshot in a faust table (rocksdb store,
changelog topic ``<app_id>-sessions-changelog``). faust commits the input offsets only
after the batch was handled and the producer flushed, so a restarted worker restores
each session from the changelog and continues; nothing is lost, repeats carry the same
``event_id``. A timer closes windows when no events arrive.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import faust

# faust's stores write a table key into the partition of the *current event*; a snapshot
# written outside the event's own iteration (end of batch, timer) sets it explicitly.
from faust.streams import _current_event

from services.aggregator.driver import Output, SessionDriver
from services.aggregator.settings import AggregatorSettings
from shared.contracts.codec import EventCodec
from shared.contracts.events import Alert, ClassAggregate
from shared.contracts.timing import wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, LIFECYCLE, SCORES
from shared.log import get_logger
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import LiveBus

_log = get_logger(__name__)
TABLE = "sessions"


class FaustTableStore:
    """Session snapshots in a faust table, written in the partition of the session's last record."""

    def __init__(self, *, table: Any) -> None:
        self._table = table
        self._events: dict[str, Any] = {}

    def remember(self, session: str, event: Any) -> None:
        self._events[session] = event

    def forget(self) -> None:
        self._events.clear()

    def sessions(self) -> list[str]:
        return [bytes(k).decode() for k in self._table.keys()]

    def load(self, session: str) -> bytes | None:
        with self._as_event(session):
            value = self._table.get(session.encode())
        return bytes(value) if value is not None else None

    def save(self, session: str, data: bytes) -> None:
        if session not in self._events:
            # No record of this session since this worker took it over: the next one saves.
            return
        with self._as_event(session):
            self._table[session.encode()] = data

    @contextmanager
    def _as_event(self, session: str) -> Iterator[None]:
        event = self._events.get(session)
        if event is None:
            yield
            return
        token = _current_event.set(weakref.ref(event))
        try:
            yield
        finally:
            _current_event.reset(token)


class FaustEmitter:
    """Sends outputs to the aggregate and alert topics and waits for the broker's ack."""

    def __init__(self, *, aggregates: Any, alerts: Any) -> None:
        self._aggregates = aggregates
        self._alerts = alerts
        self._aggregate_codec = EventCodec(ClassAggregate)
        self._alert_codec = EventCodec(Alert)

    async def emit(self, session: str, events: Sequence[Output]) -> None:
        key = session.encode()
        pending = []
        for event in events:
            if isinstance(event, ClassAggregate):
                fut = await self._aggregates.send(key=key, value=self._aggregate_codec.encode(event))
            else:
                fut = await self._alerts.send(key=key, value=self._alert_codec.encode(event))
            pending.append(fut)
        await asyncio.gather(*pending)


class AggregatorFaustApp:
    """Builds the faust app (agent, table, timer) around a :class:`SessionDriver`."""

    def __init__(
        self,
        *,
        settings: AggregatorSettings,
        common: CommonSettings,
        metrics: Metrics,
        partitions: int,
        live: LiveBus | None,
    ) -> None:
        self.settings = settings
        self._live_bus = live
        self._live_started = False
        self._lock = asyncio.Lock()
        self._stream: Any = None
        self._metrics = metrics
        self._next_offset: dict[tuple[str, int], int] = {}
        self._unacked: list[Any] = []
        self._touched: set[str] = set()
        self._batch_started = 0.0
        self._batch_received = 0.0
        brokers = [f"kafka://{h.strip()}" for h in common.kafka_bootstrap.split(",") if h.strip()]
        self.app = faust.App(
            settings.app_id,
            broker=brokers,
            store="rocksdb://" if settings.store == "rocksdb" else "memory://",
            datadir=str(settings.data_dir),
            autodiscover=False,
            web_enabled=False,
            topic_partitions=partitions,
            topic_replication_factor=settings.replicas,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.broker_session_timeout_s,
            broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
            broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
            broker_commit_every=settings.batch_max,
            broker_commit_interval=1.0,
            table_standby_replicas=0,
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                               "value_serializer": "raw"}
        self.scores_topic = settings.topic(SCORES.name)
        self.inputs = self.app.topic(self.scores_topic, settings.topic(LIFECYCLE.name), **raw)
        self.aggregates = self.app.topic(settings.topic(AGGREGATES.name), partitions=partitions, **raw)
        self.alerts = self.app.topic(settings.topic(ALERTS.name), partitions=partitions, **raw)
        self.table = self.app.Table(TABLE, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        self.store = FaustTableStore(table=self.table)
        self.driver = SessionDriver(
            config=settings.aggregation_config(),
            clock=settings.clock,
            store=self.store,
            emitter=FaustEmitter(aggregates=self.aggregates, alerts=self.alerts),
            metrics=metrics,
            live=live,
            end_grace_s=settings.end_grace_s,
        )
        self.app.agent(self.inputs, name=f"{settings.app_id}.aggregate")(self._aggregate)
        self.app.timer(settings.tick_s, name=f"{settings.app_id}.tick")(self._tick)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    async def _ensure_live(self) -> None:
        if self._live_bus is not None and not self._live_started:
            await self._live_bus.start()
            self._live_started = True

    async def _aggregate(self, stream: Any) -> None:
        """Feed every record at once; close, emit, snapshot and only then ack, one batch at a time.

        Batches are made here rather than with ``Stream.take_events``: under load its buffer
        can lose records while the previous batch is being acked (seen in the restart test: a
        batch of 116 records spanning 206 offsets, the rest acked and never handed over).
        """
        settings = self.settings
        acking = stream.noack()
        self._stream = acking
        async for event in acking.events():
            async with self._lock:
                if not self._unacked:
                    self._batch_started = time.monotonic()
                    self._batch_received = wall_clock()
                is_score = event.message.topic == self.scores_topic
                kind: Literal["score", "lifecycle"] = "score" if is_score else "lifecycle"
                session = self.driver.add(kind, bytes(event.value))
                if session is not None:
                    self.store.remember(session, event)
                    self._touched.add(session)
                self._unacked.append(event)
                self._check_offset(event.message)
                full = len(self._unacked) >= settings.batch_max
                if full or time.monotonic() - self._batch_started >= settings.batch_within_s:
                    await self._close_batch()

    def _check_offset(self, message: Any) -> None:
        """Count and log records faust never handed over (an offset gap in a partition).

        Kafka offsets of these topics have no gaps, so a jump forward means lost input. faust
        marks records that arrive during a rebalance as skipped and acks them; when their
        offsets get committed they are never redelivered.
        """
        key = (message.topic, message.partition)
        expected = self._next_offset.get(key)
        if expected is not None and message.offset > expected:
            self._metrics.errors_total.labels("aggregator", "input_gap").inc(message.offset - expected)
            _log.warning("aggregator input gap: %d records of %s[%d] from offset %d not delivered to this worker",
                         message.offset - expected, message.topic, message.partition, expected)
        self._next_offset[key] = max(expected or 0, message.offset + 1)

    async def _close_batch(self) -> None:
        """Close windows of the sessions in the batch, emit, snapshot, then ack its records (lock held)."""
        await self._ensure_live()
        events, touched = self._unacked, self._touched
        self._unacked, self._touched = [], set()
        if _log.isEnabledFor(logging.DEBUG) and events:
            first, last = events[0].message, events[-1].message
            _log.debug("aggregator batch of %d records: %s[%d]@%d .. %s[%d]@%d", len(events), first.topic,
                       first.partition, first.offset, last.topic, last.partition, last.offset)
        await self.driver.close(touched, received=self._batch_received)
        if self._stream is not None:
            for event in events:
                await self._stream.ack(event)

    def _recovering(self) -> bool:
        """Partitions moving or tables still replaying their changelog: snapshots may be stale."""
        recovery: Any = getattr(self.app.tables, "recovery", None)
        in_recovery = bool(recovery is not None and recovery.in_recovery)
        return bool(self.app.rebalancing or in_recovery or not self.app.flow_control.is_active())

    async def _tick(self) -> None:
        if self._recovering():
            return
        async with self._lock:
            await self._ensure_live()
            if self._unacked:
                await self._close_batch()
            for session in self.store.sessions():
                if session not in self.driver.finished:
                    self.driver.session(session)
            await self.driver.tick()

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        async with self._lock:
            # unacked records come again from the committed offsets; the state reloads from snapshots
            self._unacked, self._touched = [], set()
            self.driver.forget()
            self.store.forget()
            _log.info("aggregator partitions %s -> %s", "assigned", "revoked", extra={"partitions": len(revoked)})
