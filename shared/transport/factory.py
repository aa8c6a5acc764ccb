"""Build the transports a service needs from settings alone (memory or Redis + Kafka)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.topics import MEDIA_STREAM
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import EventBus, LiveBus, MediaBus
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus


@dataclass
class Transports:
    """The three transports of one process."""

    media: MediaBus
    events: EventBus
    live: LiveBus

    async def start(self) -> None:
        for part in (self.media, self.events, self.live):
            await part.start()

    async def close(self) -> None:
        for part in (self.live, self.events, self.media):
            await part.close()


def build_transports(settings: CommonSettings, *, metrics: Metrics, client_id: str = "classpulse") -> Transports:
    """Memory transports for ``transport=memory``, Redis + Kafka for ``distributed``."""
    if settings.transport == "memory":
        return Transports(
            media=MemoryMediaBus(maxlen=settings.media_stream_maxlen, metrics=metrics),
            events=MemoryEventBus(retention=settings.memory_event_retention),
            live=MemoryLiveBus(),
        )
    from shared.transport.kafka import KafkaEventBus
    from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus

    url = settings.redis_url.get_secret_value()
    return Transports(
        media=RedisMediaBus(url=url, stream=MEDIA_STREAM, maxlen=settings.media_stream_maxlen, metrics=metrics),
        events=KafkaEventBus(bootstrap=settings.kafka_bootstrap, client_id=client_id),
        live=RedisLiveBus(url=url),
    )
