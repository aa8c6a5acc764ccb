"""Typed access to the live bus: publish an event to a session's channel and state in one call."""

from __future__ import annotations

from shared.contracts.codec import DecodeError
from shared.contracts.events import ScoreEvent
from shared.contracts.live import (
    AnyLiveMessage,
    LiveEvent,
    decode_live,
    encode_live,
    state_field,
    wrap_live,
)
from shared.contracts.topics import live_channel, state_key
from shared.log import get_logger
from shared.privacy.view import PrivacyView
from shared.transport.base import LiveBus

_log = get_logger(__name__)

AnyLive = AnyLiveMessage


class LivePublisher:
    """Publishes scores, aggregates, alerts and lifecycle events for live viewers.

    Each event is stored as the latest of its kind in ``state_key(session)`` (for the
    live API) and then fanned out on ``live_channel(session)`` (for WebSocket/SSE feeds).
    With ``privacy``, a participant's scores stay off the live bus when the session is
    aggregate-only or the participant opted out (no per-student row reaches Redis).
    """

    def __init__(self, *, bus: LiveBus, privacy: PrivacyView | None = None) -> None:
        self._bus = bus
        self._privacy = privacy

    async def publish(self, event: LiveEvent) -> None:
        if isinstance(event, ScoreEvent) and self._privacy is not None:
            if (await self._privacy.get(event.session)).hides(event.participant):
                return
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
