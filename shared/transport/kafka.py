"""Kafka event log via aiokafka: keyed by session, acks=all, idempotent producer,
at-least-once consumers that commit only after handling.

Broker outages (a paused or restarting broker) lose nothing and crash nothing:

* :meth:`KafkaEventBus.publish` keeps an event until the broker acknowledged it: a delivery
  attempt that times out (``kafka_publish_attempt_ms``) or fails with a retriable error is sent
  again after a bounded backoff (counted in ``classpulse_event_publish_retries_total``). At
  most ``kafka_unacked_max`` events wait unacknowledged per process (gauge
  ``classpulse_events_unacked``); past it a publish waits for room (counted), so the bound is
  backpressure, never a drop. Event ids are stable, so a resend is deduplicated downstream.
* :meth:`KafkaEventConsumer.commit` treats a refused commit (the group rebalanced while the
  broker was away: ``CommitFailedError``, unknown member, illegal generation) as "not
  committed": counted, and the consumer keeps polling; aiokafka rejoins the group and the
  records since the last committed offset are read again (consumers dedupe on event ids).
* A broker that restarted can reject the idempotent producer's sequence numbers
  (``OutOfOrderSequenceNumber``, or a fenced/unknown producer id), which ends aiokafka's sender for
  good. The bus then replaces its producer (a new producer id) and sends again (counted in
  ``classpulse_errors_total{stage="kafka", error="producer_renewed"}``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.structs import TopicPartition

from shared.log import get_logger
from shared.metrics import Metrics
from shared.supervise import SupervisionPolicy
from shared.transport.base import EventRecord

_log = get_logger(__name__)
_REFUSED_COMMIT = (CommitFailedError, UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError)
_PRODUCER_LOST = (OutOfOrderSequenceNumber, ProducerFenced, InvalidProducerEpoch, InvalidProducerIdMapping)
"""The broker no longer accepts this producer's id/sequence (after a restart): only a new producer can send."""


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and bool(exc.retriable))


class KafkaEventBus:
    """Event log on Apache Kafka."""

    def __init__(
        self,
        *,
        bootstrap: str,
        client_id: str = "classpulse",
        linger_ms: int = 0,
        metrics: Metrics | None = None,
        unacked_max: int = 10_000,
        attempt_ms: int = 10_000,
        policy: SupervisionPolicy | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.linger_ms = linger_ms
        self.attempt_ms = attempt_ms
        self._metrics = metrics
        self._policy = policy or SupervisionPolicy()
        self._room = asyncio.Semaphore(unacked_max)
        self._unacked = 0
        self._rng = random.Random()
        self._producer: AIOKafkaProducer | None = None
        self._renewing = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()

    @property
    def unacked(self) -> int:
        """Events handed to the producer and not acknowledged yet."""
        return self._unacked

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            request_timeout_ms=self.attempt_ms,
        )

    async def start(self) -> None:
        self._producer = self._new_producer()
        await self._producer.start()

    async def _renew(self, lost: AIOKafkaProducer) -> None:
        """Replace ``lost`` (its sender ended) by a started new producer, once for all concurrent senders."""
        async with self._renewing:
            if self._producer is not lost:
                return  # another sender renewed it already (or the bus closed)
            fresh = self._new_producer()
            await fresh.start()  # a broker still away raises a retriable error: the caller backs off
            self._producer = fresh
            if self._metrics is not None:
                self._metrics.errors_total.labels("kafka", "producer_renewed").inc()
            _log.warning("event producer %s -> %s (the broker rejected its sequence numbers)", "lost", "renewed")
            retired = asyncio.create_task(self._stop_quietly(lost))
            self._retired.add(retired)
            retired.add_done_callback(self._retired.discard)

    async def _stop_quietly(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout=self.attempt_ms / 1000 + 1)
        except (KafkaError, TimeoutError, OSError):
            pass  # what it still held is being sent again by its senders through the new producer

    async def close(self) -> None:
        """Flush and stop the producer; bounded by one delivery attempt (a broker that is away at shutdown
        loses what is still unacknowledged, which is logged with its count)."""
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        await asyncio.gather(*self._retired, return_exceptions=True)
        try:
            await asyncio.wait_for(producer.stop(), timeout=self.attempt_ms / 1000 + 1)
        except TimeoutError:
            _log.warning(
                "event producer %s -> %s (broker away; unacknowledged events lost)", "stopping", "stopped",
                extra={"unacked": self._unacked},
            )

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Return once the broker acknowledged the event; retries (bounded backoff) while it does not."""
        if self._producer is None:
            raise RuntimeError("KafkaEventBus used before start()")
        if self._room.locked() and self._metrics is not None:
            self._metrics.event_publish_waits_total.inc()
        async with self._room:
            self._track(+1)
            try:
                await self._deliver(topic, key.encode(), value)
            finally:
                self._track(-1)

    async def _deliver(self, topic: str, key: bytes, value: bytes) -> None:
        attempt = 0
        while True:
            producer = self._producer
            if producer is None:
                raise RuntimeError("KafkaEventBus closed while publishing")
            try:
                await producer.send_and_wait(topic, value=value, key=key)
                if attempt:
                    _log.info("event delivery %s -> %s", "retrying", "acknowledged", extra={"attempts": attempt + 1})
                return
            except _PRODUCER_LOST:
                try:
                    await self._renew(producer)
                except KafkaError as renew_exc:
                    if not _retriable(renew_exc):
                        raise
                attempt += 1
                if self._metrics is not None:
                    self._metrics.event_publish_retries_total.labels(topic).inc()
                if attempt > 1:
                    await asyncio.sleep(self._policy.backoff(attempt, self._rng))
            except KafkaError as exc:
                if not _retriable(exc):
                    raise
                attempt += 1
                if self._metrics is not None:
                    self._metrics.event_publish_retries_total.labels(topic).inc()
                if attempt == 1:
                    _log.warning(
                        "event delivery %s -> %s (broker did not acknowledge)", "sent", "retrying",
                        extra={"topic": topic, "error": type(exc).__name__},
                    )
                await asyncio.sleep(self._policy.backoff(attempt, self._rng))

    def _track(self, delta: int) -> None:
        self._unacked += delta
        if self._metrics is not None:
            self._metrics.events_unacked.set(self._unacked)

    def consumer(self, topics: Sequence[str], *, group: str, from_beginning: bool = True) -> KafkaEventConsumer:
        return KafkaEventConsumer(
            bootstrap=self.bootstrap, topics=list(topics), group=group, from_beginning=from_beginning,
            metrics=self._metrics,
        )


class KafkaEventConsumer:
    """A consumer-group member; offsets are committed only by :meth:`commit`."""

    def __init__(
        self, *, bootstrap: str, topics: list[str], group: str, from_beginning: bool, metrics: Metrics | None = None
    ) -> None:
        self.group = group
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self._metrics = metrics
        self._positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()

    async def close(self) -> None:
        await self._consumer.stop()

    async def poll(self, *, max_records: int, timeout_ms: int) -> list[EventRecord]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[EventRecord] = []
        for tp, messages in batches.items():
            for m in messages:
                out.append(
                    EventRecord(
                        topic=m.topic,
                        key=(m.key or b"").decode(),
                        value=m.value or b"",
                        partition=m.partition,
                        offset=m.offset,
                    )
                )
                self._positions[tp] = m.offset + 1
        return out

    async def commit(self) -> None:
        """Commit what was polled; a commit the group refused (it rebalanced) is counted and skipped:
        the records since the last committed offset are read again by whoever holds their partitions."""
        if not self._positions:
            return
        positions, self._positions = dict(self._positions), {}
        try:
            await self._consumer.commit(positions)
        except _REFUSED_COMMIT as exc:
            if self._metrics is not None:
                self._metrics.event_commits_failed_total.labels(self.group).inc()
            _log.warning(
                "consumer offsets %s -> %s (group rebalanced; records are read again)", "polled", "not committed",
                extra={"group": self.group, "error": type(exc).__name__},
            )
