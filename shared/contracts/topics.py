"""Names of every stream, topic and channel, and the model each one carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.interactions import InteractionEvent

E = TypeVar("E", bound=BaseModel)

MEDIA_STREAM = "classpulse:media"
"""Redis stream of encoded media (bounded); consumer group ``inference``."""

INFERENCE_GROUP = "inference"


def live_channel(session: str) -> str:
    """Redis pub/sub channel with every live event of one session (envelope: ``shared.contracts.live``)."""
    return f"classpulse:live:{session}"


def state_key(session: str) -> str:
    """Redis hash with the latest live messages of one session (fields: ``shared.contracts.live.state_field``)."""
    return f"classpulse:state:{session}"


def summary_key(session: str) -> str:
    """Redis hash with the session summary (field ``summary``: ``SessionSummary`` JSON), written at session end.

    Producer: services.aggregator. Consumers: dashboards, the gateway.
    """
    return f"classpulse:summary:{session}"


@dataclass(frozen=True)
class EventTopic(Generic[E]):
    """A Kafka topic and the one model it carries, keyed by session."""

    name: str
    model: type[E]


SCORES: EventTopic[ScoreEvent] = EventTopic("classpulse.scores", ScoreEvent)
AGGREGATES: EventTopic[ClassAggregate] = EventTopic("classpulse.aggregates", ClassAggregate)
ALERTS: EventTopic[Alert] = EventTopic("classpulse.alerts", Alert)
LIFECYCLE: EventTopic[LifecycleEvent] = EventTopic("classpulse.lifecycle", LifecycleEvent)
INTERACTIONS: EventTopic[InteractionEvent] = EventTopic("classpulse.interactions", InteractionEvent)

EVENT_TOPICS: tuple[EventTopic[BaseModel], ...] = (  # type: ignore[assignment]
    SCORES, AGGREGATES, ALERTS, LIFECYCLE, INTERACTIONS
)
