"""Live fan-out envelope: what travels on ``live_channel(session)`` and sits in ``state_key(session)``.

Producers: services.inference (scores), services.aggregator / the in-process aggregation
(aggregates, alerts), services.ingest (lifecycle). Consumer: services.gateway (live API,
WebSocket/SSE feed, teacher dashboard).

Every live message is one JSON object ``{"kind": ..., "event": {...}}`` whose ``event``
is the same versioned model as on the Kafka topic of that kind, so a dashboard reads
exactly what Kafka users read. The latest message of each kind and subject is kept in
the session's state hash under :func:`state_field`; the live API is built from it.
Use :class:`shared.transport.live.LivePublisher` to publish (channel + state in one call).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.contracts.codec import DecodeError
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.interactions import InteractionCounts, InteractionEvent
from shared.contracts.privacy import PrivacyEvent

LiveEvent = ScoreEvent | ClassAggregate | Alert | LifecycleEvent


class LiveScore(BaseModel):
    """A participant's latest behaviour signals."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["score"] = "score"
    event: ScoreEvent


class LiveAggregate(BaseModel):
    """The session's latest class aggregate."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["aggregate"] = "aggregate"
    event: ClassAggregate


class LiveAlert(BaseModel):
    """An alert raised or cleared."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["alert"] = "alert"
    event: Alert


class LiveLifecycle(BaseModel):
    """A participant joined, left, turned the camera off ..."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lifecycle"] = "lifecycle"
    event: LifecycleEvent


class LiveInteraction(BaseModel):
    """A chat message, question, poll answer ... (derived fields; text only with CLASSPULSE_KEEP_TEXT),
    with the participant's totals after it (so a viewer sets, never adds: repeats are harmless)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["interaction"] = "interaction"
    event: InteractionEvent
    counts: InteractionCounts


class LivePrivacy(BaseModel):
    """A participant opted out or back in, or the session's mode changed (sent by the gateway, never stored)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["privacy"] = "privacy"
    event: PrivacyEvent


LiveMessage = Annotated[
    LiveScore | LiveAggregate | LiveAlert | LiveLifecycle | LiveInteraction | LivePrivacy, Field(discriminator="kind")
]
AnyLiveMessage = LiveScore | LiveAggregate | LiveAlert | LiveLifecycle | LiveInteraction | LivePrivacy

_adapter: TypeAdapter[LiveMessage] = TypeAdapter(LiveMessage)


def wrap_live(event: LiveEvent) -> LiveScore | LiveAggregate | LiveAlert | LiveLifecycle:
    """The envelope for one event."""
    if isinstance(event, ScoreEvent):
        return LiveScore(event=event)
    if isinstance(event, ClassAggregate):
        return LiveAggregate(event=event)
    if isinstance(event, Alert):
        return LiveAlert(event=event)
    return LiveLifecycle(event=event)


def encode_live(message: AnyLiveMessage) -> bytes:
    return message.model_dump_json().encode()


def decode_live(data: bytes) -> AnyLiveMessage:
    """Decode one live message; raises :class:`DecodeError` when it matches no envelope."""
    try:
        return _adapter.validate_json(data)
    except ValidationError as exc:
        raise DecodeError(f"live message does not match the contract: {exc}") from exc


def state_field(message: AnyLiveMessage) -> str:
    """Field of the session state hash that keeps the latest message of this kind and subject."""
    if isinstance(message, LiveScore):
        return f"score:{message.event.participant}"
    if isinstance(message, LiveAggregate):
        window = message.event.window
        return f"aggregate:{window.kind}:{window.size_s:g}"
    if isinstance(message, LiveAlert):
        return f"alert:{message.event.participant or '*'}:{message.event.kind}"
    if isinstance(message, LiveInteraction):
        return f"interaction:{message.event.participant}"
    if isinstance(message, LivePrivacy):
        return f"privacy:{message.event.participant or '*'}"
    return f"lifecycle:{message.event.participant}"
