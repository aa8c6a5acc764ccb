"""The aggregator as a faust-streaming worker.

One agent consumes ``classpulse.scores``, ``classpulse.lifecycle`` and
``classpulse.interactions`` (all keyed by session, co-partitioned) in batches; per batch
the :class:`SessionDriver` feeds the aggregation core, emits closed windows to
``classpulse.aggregates`` and alert changes to ``classpulse.alerts`` (keyed by session,
waiting for the broker's ack), publishes them to Redis for live views, and saves the
session's snapshot in a faust table (rocksdb store, changelog topic
``<app_id>-sessions-changelog``). A timer closes windows when no events arrive.

Input offsets are stored with the state: after each batch the table also gets, per
partition, the next input offset of each topic (key ``__offsets__/<partition>``, same
changelog partition as that partition's snapshots). The agent takes every partition's
records strictly in offset order from that stored position: older ones are already in
the state and dropped, and a jump forward (records faust skipped and acked itself while
the group rebalanced, see :meth:`AggregatorFaustApp._in_order`) seeks the consumer back
to the stored position, so they come again. faust's committed offsets only decide where
fetching starts; nothing is lost, repeats carry the same ``event_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faust

# faust's stores write a table key into the partition of the *current event*; a snapshot
# written outside the event's own iteration (end of batch, timer) sets it explicitly.
from faust.streams import _current_event
from faust.types import TP

from services.aggregator.driver import InputKind, Output, SessionDriver
from services.aggregator.settings import AggregatorSettings
from services.aggregator.stall import Waiting
from shared.contracts.codec import EventCodec
from shared.contracts.events import Alert, ClassAggregate
from shared.contracts.timing import wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, PRIVACY, SCORES
from shared.log import get_logger
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import LiveBus

_log = get_logger(__name__)
TABLE = "sessions"
OFFSETS = "__offsets__/"
"""Prefix of the table keys holding a partition's next input offsets (not a session)."""
REWIND_RETRY_S = 2.0
"""Seek again when the records a seek asked for have not come after this long."""


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
        keys = (bytes(k).decode() for k in self._table.keys())
        return [k for k in keys if not k.startswith(OFFSETS)]

    def load_offsets(self, event: Any) -> dict[str, int] | None:
        """The next input offset per topic stored for ``event``'s partition (None: never stored)."""
        token = _current_event.set(weakref.ref(event))
        try:
            value = self._table.get(f"{OFFSETS}{event.message.partition}".encode())
        finally:
            _current_event.reset(token)
        return {str(k): int(v) for k, v in json.loads(bytes(value)).items()} if value is not None else None

    def save_offsets(self, event: Any, offsets: dict[str, int]) -> None:
        """Store the next input offsets of ``event``'s partition (after that partition's snapshots)."""
        token = _current_event.set(weakref.ref(event))
        try:
            self._table[f"{OFFSETS}{event.message.partition}".encode()] = json.dumps(offsets).encode()
        finally:
            _current_event.reset(token)

    def load(self, session: str) -> bytes | None:
        with self._as_event(session):
            value = self._table.get(session.encode())
        return bytes(value) if value is not None else None

    def delete(self, session: str) -> None:
        with self._as_event(session):
            try:
                del self._table[session.encode()]
            except KeyError:
                pass

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
        self._position: dict[tuple[str, int], int] = {}
        """Next offset to take per input (topic, partition), as far as the state has it."""
        self._rewinds: dict[tuple[str, int], tuple[int, float]] = {}
        self._loaded: set[int] = set()
        self._taken_at: dict[tuple[str, int], float] = {}
        """Partitions whose stored offsets were loaded since the last assignment."""
        self._unacked: list[Any] = []
        self._closing = 0
        """Records of the batch being closed (emitted, snapshotted, acked) right now."""
        self.progress = 0
        """Counts batches closed and ticks that emitted windows (the stall watchdog reads it)."""
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
            # faust's default (True) makes a rebalance and a stop wait until every record an agent has taken is
            # acked. This agent acks a batch only when the next record or the tick closes it, and during a
            # rebalance neither comes (flow control is off, the tick waits for the rebalance): after a Kafka pause
            # the worker then waited forever, and SIGTERM did not end it. Records it holds unacked are simply
            # delivered again from the committed offsets (same event ids, dropped by _in_order / deduplicated).
            stream_wait_empty=False,
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                               "value_serializer": "raw"}
        self.kinds: dict[str, InputKind] = {
            settings.topic(SCORES.name): "score",
            settings.topic(LIFECYCLE.name): "lifecycle",
            settings.topic(INTERACTIONS.name): "interaction",
            settings.topic(PRIVACY.name): "privacy",
        }
        self.inputs = self.app.topic(*self.kinds, **raw)
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
            aggregate_only=common.aggregate_only,
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
                if not await self._in_order(event):
                    await acking.ack(event)
                    continue
                if not self._unacked:
                    self._batch_started = time.monotonic()
                    self._batch_received = wall_clock()
                session = self.driver.add(self.kinds[event.message.topic], bytes(event.value))
                if session is not None:
                    self.store.remember(session, event)
                    self._touched.add(session)
                self._unacked.append(event)
                full = len(self._unacked) >= settings.batch_max
                if full or time.monotonic() - self._batch_started >= settings.batch_within_s:
                    await self._close_batch()

    async def _in_order(self, event: Any) -> bool:
        """Whether ``event`` is the next record of its partition for the state (lock held).

        faust skips records fetched before a rebalance and read after it, and acks them
        (``Stream._c_aiter`` in faust/streams.py: ``generation_id`` changed or flow control
        inactive -> ``skipped_value`` -> ``event.ack()``); once their offsets are committed
        faust never delivers them again. Here the next offset comes from the state (the
        table's stored offsets, restored from the changelog with the snapshots): a record
        behind it is already counted and dropped; one ahead of it means records went
        missing, and the consumer seeks back to them (duplicates are ignored by event id).
        """
        message = event.message
        key = (message.topic, message.partition)
        if message.partition not in self._loaded:
            # the state's offsets of every topic in this partition, loaded once per assignment
            self._loaded.add(message.partition)
            for topic, stored in (self.store.load_offsets(event) or {}).items():
                self._position.setdefault((topic, message.partition), stored)
        # no stored offset: nothing of this topic-partition is in the state yet; start where faust
        # starts (its committed offset). Asking the broker for the earliest offset here could
        # block the agent (and the tick) inside faust's consumer thread; seen in the rebalance test.
        expected = self._position.setdefault(key, message.offset)
        offset = message.offset
        if offset == expected:
            self._position[key] = offset + 1
            self._taken_at[key] = time.monotonic()
            return True
        if offset < expected:
            return False
        await self._rewind(key, expected, offset - expected)
        return False

    async def _rewind(self, key: tuple[str, int], expected: int, missing: int) -> None:
        """Seek ``key`` back to ``expected`` (once, again after ``REWIND_RETRY_S`` if nothing came)."""
        now = time.monotonic()
        last = self._rewinds.get(key)
        if last is None or last[0] != expected:
            self._metrics.errors_total.labels("aggregator", "input_gap").inc(missing)
            _log.warning("aggregator input %s -> %s: %d records of %s[%d] from offset %d not in the state, read again",
                         "gap", "rewound", missing, key[0], key[1], expected)
        elif now - last[1] < REWIND_RETRY_S:
            return  # records fetched before the seek are still coming
        else:
            _log.info("aggregator input rewind %s -> %s: %s[%d] from offset %d", "waiting", "retried",
                      key[0], key[1], expected)
        self._rewinds[key] = (expected, now)
        await self.app.consumer.seek_wait({TP(*key): expected})

    async def _check_tails(self) -> None:
        """Seek back partitions whose last records were skipped (no later record shows the gap; lock held)."""
        now = time.monotonic()
        for key, expected in list(self._position.items()):
            end = self.app.consumer.highwater(TP(*key))
            if end is None or end <= expected:
                continue
            self.driver.backlog()  # ended sessions wait for these records before their final flush
            if now - self._taken_at.get(key, 0.0) >= REWIND_RETRY_S:
                await self._rewind(key, expected, end - expected)
                self._taken_at[key] = now

    def _save_offsets(self, events: Sequence[Any]) -> None:
        """Store the next input offsets of every partition in the batch (after its snapshots)."""
        last: dict[int, Any] = {}
        for event in events:
            last[event.message.partition] = event
        for partition, event in last.items():
            offsets = {topic: pos for (topic, part), pos in self._position.items() if part == partition}
            self.store.save_offsets(event, offsets)

    async def _close_batch(self) -> None:
        """Close windows of the sessions in the batch, emit, snapshot, then ack its records (lock held)."""
        await self._ensure_live()
        events, touched = self._unacked, self._touched
        self._unacked, self._touched = [], set()
        if _log.isEnabledFor(logging.DEBUG) and events:
            first, last = events[0].message, events[-1].message
            _log.debug("aggregator batch of %d records: %s[%d]@%d .. %s[%d]@%d", len(events), first.topic,
                       first.partition, first.offset, last.topic, last.partition, last.offset)
        self._closing = len(events)
        try:
            await self.driver.close(touched, received=self._batch_received)
            self._save_offsets(events)
            if self._stream is not None:
                for event in events:
                    await self._stream.ack(event)
        finally:
            self._closing = 0
        self.progress += 1

    def waiting(self) -> Waiting:
        """Records taken and not closed, and input lag past the state's positions (for the stall watchdog)."""
        lag = 0
        for (topic, partition), expected in list(self._position.items()):
            try:
                end = self.app.consumer.highwater(TP(topic, partition))
            except Exception:  # not started, stopping, or the partition just moved: nothing known to wait
                continue
            if end is not None and end > expected:
                lag += end - expected
        return Waiting(records=len(self._unacked) + self._closing, lag=lag)

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
            await self._check_tails()
            for session in self.store.sessions():
                if session not in self.driver.finished:
                    self.driver.session(session)
            if await self.driver.tick():
                self.progress += 1

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        async with self._lock:
            # unacked records come again from the committed offsets; the state reloads from snapshots
            self._unacked, self._touched = [], set()
            self._position.clear()
            self._rewinds.clear()
            self._loaded.clear()
            self._taken_at.clear()
            self.driver.forget()
            self.store.forget()
            _log.info("aggregator partitions %s -> %s", "assigned", "revoked", extra={"partitions": len(revoked)})
