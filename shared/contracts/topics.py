"""Names of every stream, topic and channel, and the model each one carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.privacy import PrivacyEvent

E = TypeVar("E", bound=BaseModel)

MEDIA_STREAM = "classpulse:media"
"""Prefix of the media shard streams: ``classpulse:media:{shard}``, one bounded Redis stream per shard.

Producer: services.ingest (a participant's media always goes to the shard of
``shared.transport.shards.shard_of("<session>/<participant>", CLASSPULSE_MEDIA_SHARDS)``).
Consumer: services.inference, consumer group ``inference``; each shard is read only by the
worker holding its lease.
"""

INFERENCE_GROUP = "inference"

SPEECH_STREAM = "classpulse:speech"
"""Prefix of the speech segment stream (distributed mode): ``classpulse:speech:0``, one bounded Redis stream
(the default of ``CLASSPULSE_TRANSCRIBE_STREAM``).

Producer: services.inference (each closed speaking segment of the participants whose media shard
it owns, :mod:`shared.contracts.speech`). Consumer: ``classpulse transcribe`` workers, consumer group
``transcribe``; any worker takes any segment (one stream, load-balanced by the group).
"""

TRANSCRIBE_GROUP = "transcribe"

INFERENCE_COORDINATION = "classpulse:inference"
"""Prefix of the inference workers' coordination keys in Redis (``shared.transport.redis_leases``):
``{prefix}:members`` (live workers, heartbeat expiry as score), ``{prefix}:lease:{shard}`` (the owner
and fencing epoch of a shard) and ``{prefix}:pstate:{session}/{participant}`` (the latest snapshot of
a participant's inference state, written by the owner of its shard, read by the next owner).
"""

PUBLISH_EPOCHS = "classpulse:publish"
"""Prefix of the per-participant publish counters in Redis (``shared.transport.redis_publishes``):
``{prefix}:{session}/{participant}`` holds the publishes so far and the server time of the first,
so a reconnect (on any ingest worker) continues the participant's epoch and media clock.
"""


def media_stream(shard: int, prefix: str = MEDIA_STREAM) -> str:
    """The media stream of one shard: ``classpulse:media:{shard}``."""
    return f"{prefix}:{shard}"


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


def privacy_key(session: str) -> str:
    """Redis string with the session's privacy policy (``shared.contracts.privacy.SessionPrivacy`` JSON).

    Producer: services.gateway. Consumers: ingest and inference (opt-outs), the aggregator, gateways.
    Expires after ``CLASSPULSE_RETENTION_S`` like the session's other keys.
    """
    return f"classpulse:privacy:{session}"


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
PRIVACY: EventTopic[PrivacyEvent] = EventTopic("classpulse.privacy", PrivacyEvent)

EVENT_TOPICS: tuple[EventTopic[BaseModel], ...] = (  # type: ignore[assignment]
    SCORES, AGGREGATES, ALERTS, LIFECYCLE, INTERACTIONS, PRIVACY
)
