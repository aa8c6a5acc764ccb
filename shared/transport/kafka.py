"""Kafka event log via aiokafka: keyed by session, acks=all, idempotent producer,
at-least-once consumers that commit only after handling."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from shared.transport.base import EventRecord


class KafkaEventBus:
    """Event log on Apache Kafka."""

    def __init__(self, *, bootstrap: str, client_id: str = "classpulse", linger_ms: int = 0) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
        )
        await self._producer.start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaEventBus used before start()")
        await self._producer.send_and_wait(topic, value=value, key=key.encode())

    def consumer(self, topics: Sequence[str], *, group: str, from_beginning: bool = True) -> KafkaEventConsumer:
        return KafkaEventConsumer(
            bootstrap=self.bootstrap, topics=list(topics), group=group, from_beginning=from_beginning
        )


class KafkaEventConsumer:
    """A consumer-group member; offsets are committed only by :meth:`commit`."""

    def __init__(self, *, bootstrap: str, topics: list[str], group: str, from_beginning: bool) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
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
        if self._positions:
            await self._consumer.commit(dict(self._positions))
            self._positions.clear()
