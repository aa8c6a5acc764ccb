"""The aggregator without faust: one aiokafka consumer-group member, state in memory.

Same core and driver as the faust worker; offsets are committed after each batch was
emitted. State is not recovered after a restart (a restarted consumer continues from the
committed offsets with empty sessions), so use the faust engine where that matters. Also
the baseline that the benchmark compares faust with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from services.aggregator.driver import InputKind, Output, SessionDriver
from services.aggregator.settings import AggregatorSettings
from shared.contracts.codec import EventCodec
from shared.contracts.events import Alert, ClassAggregate
from shared.contracts.timing import wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, PRIVACY, SCORES
from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import EventBus, EventConsumer, LiveBus

_log = get_logger(__name__)


class BusEmitter:
    """Publishes outputs on an :class:`EventBus` (acks=all on Kafka), keyed by session."""

    def __init__(self, *, bus: EventBus, aggregates_topic: str, alerts_topic: str) -> None:
        self._bus = bus
        self._topics = (aggregates_topic, alerts_topic)
        self._aggregate_codec = EventCodec(ClassAggregate)
        self._alert_codec = EventCodec(Alert)

    async def emit(self, session: str, events: Sequence[Output]) -> None:
        """Publish concurrently (one round of broker acks for the batch, not one per event)."""
        sends = [
            self._bus.publish(self._topics[0], session, self._aggregate_codec.encode(event))
            if isinstance(event, ClassAggregate)
            else self._bus.publish(self._topics[1], session, self._alert_codec.encode(event))
            for event in events
        ]
        await asyncio.gather(*sends)


class PlainAggregator:
    """Consume scores + lifecycle, aggregate, emit; ``run`` until cancelled."""

    def __init__(
        self, *, settings: AggregatorSettings, events: EventBus, metrics: Metrics, live: LiveBus | None,
        aggregate_only: bool = False,
    ) -> None:
        self.settings = settings
        self._kinds: dict[str, InputKind] = {
            settings.topic(SCORES.name): "score",
            settings.topic(LIFECYCLE.name): "lifecycle",
            settings.topic(INTERACTIONS.name): "interaction",
            settings.topic(PRIVACY.name): "privacy",
        }
        topics = list(self._kinds)
        self._new_consumer: Callable[[], EventConsumer] = lambda: (
            events.consumer(topics, group=f"{settings.app_id}-plain")
        )
        self.driver = SessionDriver(
            config=settings.aggregation_config(),
            clock=settings.clock,
            store=None,
            emitter=BusEmitter(bus=events, aggregates_topic=settings.topic(AGGREGATES.name),
                               alerts_topic=settings.topic(ALERTS.name)),
            metrics=metrics,
            live=live,
            end_grace_s=settings.end_grace_s,
            aggregate_only=aggregate_only,
        )

    async def run(self) -> None:
        """Consume until cancelled; each run makes a fresh consumer (a supervisor may restart it after a
        broker error; it continues from the committed offsets)."""
        self._consumer = self._new_consumer()
        await self._consumer.start()
        _log.info("plain aggregator %s -> %s", "starting", "running")
        last_tick = 0.0
        try:
            while True:
                records = await self._consumer.poll(
                    max_records=self.settings.batch_max, timeout_ms=int(self.settings.tick_s * 1000)
                )
                received = wall_clock()
                touched = set()
                for record in records:
                    session = self.driver.add(self._kinds[record.topic], record.value)
                    if session is not None:
                        touched.add(session)
                await self.driver.close(touched, received=received)
                if received - last_tick >= self.settings.tick_s:
                    await self.driver.tick()
                    last_tick = received
                if records:
                    await self._consumer.commit()
        except asyncio.CancelledError:
            _log.info("plain aggregator %s -> %s", "running", "stopped")
            raise
        finally:
            await self._consumer.close()
