"""Build the transports a service needs from settings alone (memory or Redis + Kafka)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contracts.topics import MEDIA_STREAM
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import EventBus, LiveBus, MediaBus
from shared.transport.leases import LeaseStore, MemoryLeaseStore
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.publishes import MemoryPublishRegistry, PublishRegistry


@dataclass
class Transports:
    """The transports of one process: media shards, events, live fan-out, inference leases, publish epochs."""

    media: MediaBus
    events: EventBus
    live: LiveBus
    leases: LeaseStore = field(default_factory=MemoryLeaseStore)
    publishes: PublishRegistry = field(default_factory=MemoryPublishRegistry)

    async def start(self) -> None:
        for part in (self.media, self.events, self.live, self.leases, self.publishes):
            await part.start()

    async def close(self) -> None:
        for part in (self.publishes, self.leases, self.live, self.events, self.media):
            await part.close()


def build_transports(settings: CommonSettings, *, metrics: Metrics, client_id: str = "classpulse") -> Transports:
    """Memory transports for ``transport=memory``, Redis + Kafka for ``distributed``."""
    if settings.transport == "memory":
        return Transports(
            media=MemoryMediaBus(maxlen=settings.media_stream_maxlen, shards=settings.media_shards, metrics=metrics),
            events=MemoryEventBus(retention=settings.memory_event_retention),
            live=MemoryLiveBus(),
            leases=MemoryLeaseStore(),
            publishes=MemoryPublishRegistry(),
        )
    from shared.transport.redis_leases import RedisLeaseStore
    from shared.transport.redis_publishes import RedisPublishRegistry
    from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus

    url = settings.redis_url.get_secret_value()
    return Transports(
        media=RedisMediaBus(
            url=url,
            stream=MEDIA_STREAM,
            maxlen=settings.media_stream_maxlen,
            shards=settings.media_shards,
            metrics=metrics,
        ),
        events=kafka_event_bus(settings, metrics=metrics, client_id=client_id),
        live=RedisLiveBus(url=url),
        leases=RedisLeaseStore(url=url),
        publishes=RedisPublishRegistry(url=url),
    )


def kafka_event_bus(settings: CommonSettings, *, metrics: Metrics, client_id: str) -> EventBus:
    """The Kafka event bus with the outage settings (unacked bound, attempt timeout, backoff)."""
    from shared.supervise import SupervisionPolicy
    from shared.transport.kafka import KafkaEventBus

    return KafkaEventBus(
        bootstrap=settings.kafka_bootstrap,
        client_id=client_id,
        metrics=metrics,
        unacked_max=settings.kafka_unacked_max,
        attempt_ms=settings.kafka_publish_attempt_ms,
        policy=SupervisionPolicy.from_settings(settings),
    )
