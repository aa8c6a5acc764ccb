"""In-process aggregation for ``classpulse up``: the aggregation core driven by the wall clock.

Reads scores and lifecycle events from the event bus (consumer group ``aggregator``),
keeps one :class:`SessionAggregator` per session, and every ``tick_s`` closes what the
clock allows; each class aggregate and alert is stamped with the ``aggregator`` stage and
published to the event bus (``classpulse.aggregates`` / ``classpulse.alerts``) and to the
live bus, exactly what the distributed aggregator service publishes.
"""

from __future__ import annotations

from services.aggregator.config import AggregationConfig
from services.aggregator.core import SessionAggregator
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, LIFECYCLE, SCORES
from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import EventBus, LiveBus
from shared.transport.live import LivePublisher
from shared.transport.typed import EventPublisher

_log = get_logger(__name__)
STAGE = "aggregator"
GROUP = "aggregator"


class InProcessAggregation:
    """Scores + lifecycle -> class aggregates + alerts, in the current event loop."""

    def __init__(
        self, *, events: EventBus, live: LiveBus, metrics: Metrics, config: AggregationConfig, tick_s: float = 0.25
    ) -> None:
        self._consumer = events.consumer([SCORES.name, LIFECYCLE.name], group=GROUP, from_beginning=True)
        self._scores = EventCodec(ScoreEvent)
        self._lifecycle = EventCodec(LifecycleEvent)
        self._aggregates = EventPublisher(bus=events, topic=AGGREGATES)
        self._alerts = EventPublisher(bus=events, topic=ALERTS)
        self._live = LivePublisher(bus=live)
        self._metrics = metrics
        self._config = config
        self._tick_s = tick_s
        self.sessions: dict[str, SessionAggregator] = {}

    def _session(self, session: str) -> SessionAggregator:
        agg = self.sessions.get(session)
        if agg is None:
            agg = self.sessions[session] = SessionAggregator(session=session, config=self._config)
            _log.info("session aggregation %s -> %s", "none", "open", extra={"sessions": len(self.sessions)})
        return agg

    async def run(self) -> None:
        await self._consumer.start()
        try:
            while True:
                records = await self._consumer.poll(max_records=1000, timeout_ms=int(self._tick_s * 1000))
                received = wall_clock()
                for record in records:
                    try:
                        if record.topic == SCORES.name:
                            score = self._scores.decode(record.value)
                            self._metrics.observe_hop(score.timing, transport="events", received=received)
                            self._session(score.session).add_score(score)
                        else:
                            life = self._lifecycle.decode(record.value)
                            self._session(life.session).add_lifecycle(life)
                    except DecodeError as exc:
                        self._metrics.errors_total.labels(STAGE, "decode").inc()
                        _log.warning("aggregation input skipped: %s", exc)
                await self.tick(received)
                if records:
                    await self._consumer.commit()
        finally:
            await self._consumer.close()

    async def tick(self, received: float) -> None:
        """Close what the clock allows in every session and publish the results."""
        now = wall_clock()
        for session, agg in list(self.sessions.items()):
            aggregates, alerts = agg.flush() if agg.ended else agg.advance(now)
            for aggregate in aggregates:
                await self._emit(aggregate, received)
            for alert in alerts:
                await self._emit(alert, received)
            if agg.ended:
                del self.sessions[session]
                _log.info("session aggregation %s -> %s", "open", "closed", extra={"sessions": len(self.sessions)})

    async def _emit(self, event: ClassAggregate | Alert, received: float) -> None:
        event.timing = event.timing.stamped(STAGE, received=received)
        self._metrics.observe_trail(event.timing, stage=STAGE)
        if isinstance(event, ClassAggregate):
            self._metrics.messages_total.labels(STAGE, "aggregate").inc()
            await self._aggregates.publish(event)
        else:
            self._metrics.messages_total.labels(STAGE, "alert").inc()
            await self._alerts.publish(event)
        await self._live.publish(event)
