"""Build the transports a service needs from settings alone (memory or Redis + Kafka)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.contracts.topics import MEDIA_STREAM
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import EventBus, LiveBus, MediaBus
from shared.transport.leases import LeaseStore, MemoryLeaseStore
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.publishes import MemoryPublishRegistry, PublishRegistry
from shared.transport.rate import SourceRate

if TYPE_CHECKING:  # imported where used: shared.privacy imports transport modules (no import circle)
    from shared.privacy.store import PrivacyStore
    from shared.privacy.view import PrivacyView


def _memory_store() -> PrivacyStore:
    from shared.privacy.store import MemoryPrivacyStore

    return MemoryPrivacyStore()


@dataclass
class Transports:
    """The transports of one process: media shards, events, live fan-out, inference leases, publish epochs,
    and the privacy policies (``privacy``: the store, ``privacy_view``: the cached view hot paths ask)."""

    media: MediaBus
    events: EventBus
    live: LiveBus
    leases: LeaseStore = field(default_factory=MemoryLeaseStore)
    publishes: PublishRegistry = field(default_factory=MemoryPublishRegistry)
    privacy: PrivacyStore = field(default_factory=_memory_store)
    privacy_view: PrivacyView | None = None
    source_rate: SourceRate = field(default_factory=SourceRate)
    """The analysed frame rate inference wants now: this process's video samplers cap their rate at it
    (``classpulse up`` sets it, see :mod:`shared.transport.rate`; nobody in distributed mode: no cap)."""

    def __post_init__(self) -> None:
        if self.privacy_view is None:
            from shared.privacy.view import PrivacyView

            self.privacy_view = PrivacyView(self.privacy)

    @property
    def policies(self) -> PrivacyView:
        assert self.privacy_view is not None
        return self.privacy_view

    async def start(self) -> None:
        for part in (self.media, self.events, self.live, self.leases, self.publishes, self.privacy):
            await part.start()

    async def close(self) -> None:
        for part in (self.privacy, self.publishes, self.leases, self.live, self.events, self.media):
            await part.close()


def build_transports(settings: CommonSettings, *, metrics: Metrics, client_id: str = "classpulse") -> Transports:
    """Memory transports for ``transport=memory``, Redis + Kafka for ``distributed``."""
    from shared.privacy.media import PrivateMediaBus
    from shared.privacy.store import MemoryPrivacyStore
    from shared.privacy.view import PrivacyView

    if settings.transport == "memory":
        media = MemoryMediaBus(maxlen=settings.media_stream_maxlen, shards=settings.media_shards, metrics=metrics)
        live, leases, publishes = MemoryLiveBus(), MemoryLeaseStore(), MemoryPublishRegistry()
        store = MemoryPrivacyStore(
            media=media, live=live, publishes=publishes, leases=leases, retention_s=settings.retention_s
        )
        view = PrivacyView(store, aggregate_only=settings.aggregate_only, refresh_s=0.0, metrics=metrics)
        return Transports(
            media=PrivateMediaBus(media, view=view, metrics=metrics),
            events=MemoryEventBus(retention=settings.memory_event_retention),
            live=live,
            leases=leases,
            publishes=publishes,
            privacy=store,
            privacy_view=view,
        )
    from shared.privacy.redis_store import RedisPrivacyStore
    from shared.transport.publishes import PUBLISH_TTL_S
    from shared.transport.redis_leases import RedisLeaseStore
    from shared.transport.redis_publishes import RedisPublishRegistry
    from shared.transport.redis_streams import RedisLiveBus, RedisMediaBus

    url = settings.redis_url.get_secret_value()
    redis_store = RedisPrivacyStore(url=url, shards=settings.media_shards, retention_s=settings.retention_s)
    redis_view = PrivacyView(
        redis_store, aggregate_only=settings.aggregate_only, refresh_s=settings.privacy_refresh_s, metrics=metrics
    )
    redis_media = RedisMediaBus(
        url=url,
        stream=MEDIA_STREAM,
        maxlen=settings.media_stream_maxlen,
        shards=settings.media_shards,
        metrics=metrics,
    )
    return Transports(
        media=PrivateMediaBus(redis_media, view=redis_view, metrics=metrics),
        events=kafka_event_bus(settings, metrics=metrics, client_id=client_id),
        live=RedisLiveBus(url=url, state_ttl_s=settings.retention_s),
        leases=RedisLeaseStore(url=url),
        publishes=RedisPublishRegistry(url=url, ttl_s=min(PUBLISH_TTL_S, settings.retention_s)),
        privacy=redis_store,
        privacy_view=redis_view,
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
