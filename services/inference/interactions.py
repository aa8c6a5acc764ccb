"""Interaction events into the inference engine: ``classpulse.interactions`` -> text signals.

Every inference worker reads the whole topic with its own consumer group (interactions are
few, and the worker holding a participant is the one whose steps need them); events of
participants it does not hold are kept briefly by the engine until their media arrives, or
forgotten. Only derived fields reach the engine (``is_question``, ``words``, time); the text,
if a producer sent it, is neither kept nor logged.

Wire it next to the worker (one task)::

    intake = InteractionIntake(bus=transports.events, engine=engine, metrics=metrics, group=f"inference-text-{id}")
    supervisor.spawn("inference-interactions", intake.run)

Each :meth:`InteractionIntake.run` makes a fresh consumer, so the supervisor can restart it
after a broker error (it continues from the group's committed offsets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.inference.engine import InferenceEngine
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.topics import INTERACTIONS
from shared.log import get_logger
from shared.metrics import Metrics
from shared.transport.base import EventBus, EventConsumer

_log = get_logger(__name__)
STAGE = "inference"


class InteractionIntake:
    """Consumes interaction events into :meth:`InferenceEngine.add_interaction` (run as a task)."""

    def __init__(
        self,
        *,
        bus: EventBus,
        engine: InferenceEngine,
        metrics: Metrics,
        group: str,
        topic: str = INTERACTIONS.name,
        from_beginning: bool = False,
    ) -> None:
        self._new_consumer: Callable[[], EventConsumer] = lambda: (
            bus.consumer([topic], group=group, from_beginning=from_beginning)
        )
        self._engine = engine
        self._metrics = metrics
        self._codec = EventCodec(InteractionEvent)
        self.ready = asyncio.Event()
        self.taken = 0

    async def run(self) -> None:
        self._consumer: EventConsumer = self._new_consumer()
        await self._consumer.start()
        _log.info("interaction intake state %s -> %s", "starting", "running")
        self.ready.set()
        counted = self._metrics.messages_total.labels(STAGE, "interaction")
        try:
            while True:
                records = await self._consumer.poll(max_records=500, timeout_ms=500)
                for record in records:
                    try:
                        event = self._codec.decode(record.value)
                    except DecodeError as exc:  # names fields only, never values
                        self._metrics.errors_total.labels(STAGE, "decode").inc()
                        _log.warning("interaction skipped: %s", exc)
                        continue
                    if self._engine.add_interaction(event):
                        self.taken += 1
                        counted.inc()
                if records:
                    await self._consumer.commit()
        finally:
            await self._consumer.close()
            _log.info("interaction intake state %s -> %s", "running", "stopped")
