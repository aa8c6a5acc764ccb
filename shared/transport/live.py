"""Typed access to the live bus: publish an event to a session's channel and state in one call."""

from __future__ import annotations

from shared.contracts.codec import DecodeError
from shared.contracts.live import (
    LiveAggregate,
    LiveAlert,
    LiveEvent,
    LiveInteraction,
    LiveLifecycle,
    LiveScore,
    decode_live,
    encode_live,
    state_field,
    wrap_live,
)
from shared.contracts.topics import live_channel, state_key
from shared.log import get_logger
from shared.transport.base import LiveBus

_log = get_logger(__name__)

AnyLive = LiveScore | LiveAggregate | LiveAlert | LiveLifecycle | LiveInteraction


class LivePublisher:
    """Publishes scores, aggregates, alerts and lifecycle events for live viewers.

    Each event is stored as the latest of its kind in ``state_key(session)`` (for the
    live API) and then fanned out on ``live_channel(session)`` (for WebSocket/SSE feeds).
    """

    def __init__(self, *, bus: LiveBus) -> None:
        self._bus = bus

    async def publish(self, event: LiveEvent) -> None:
        message = wrap_live(event)
        data = encode_live(message)
        session = message.event.session
        await self._bus.set_state(state_key(session), state_field(message), data)
        await self._bus.publish(live_channel(session), data)


async def read_state(bus: LiveBus, session: str) -> list[AnyLive]:
    """Every latest message kept for one session (undecodable fields are skipped)."""
    out: list[AnyLive] = []
    for data in (await bus.get_state(state_key(session))).values():
        try:
            out.append(decode_live(data))
        except DecodeError as exc:
            _log.warning("live state entry skipped: %s", exc)
    return out
