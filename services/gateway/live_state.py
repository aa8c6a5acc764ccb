"""The live snapshot of one session, read from the live bus's latest-state hash."""

from __future__ import annotations

from services.gateway.history import SessionRecord
from services.gateway.models import LiveParticipant, LiveState
from shared.contracts.live import LiveAggregate, LiveAlert, LiveScore
from shared.contracts.timing import wall_clock
from shared.transport.base import LiveBus
from shared.transport.live import read_state

QUESTIONS_IN_SNAPSHOT = 200
"""Most recent questions in a live snapshot (the dashboard's queue)."""


async def live_state(bus: LiveBus, session: str, record: SessionRecord | None = None) -> LiveState:
    """The live bus's latest state of ``session``, plus lifecycle from the gateway's history (``record``)."""
    messages = await read_state(bus, session)
    participants = sorted(
        (
            LiveParticipant.from_score(
                m.event, record.aggregator.interaction_counts(m.event.participant) if record else None
            )
            for m in messages
            if isinstance(m, LiveScore)
        ),
        key=lambda p: p.participant,
    )
    windows = sorted(
        (m.event for m in messages if isinstance(m, LiveAggregate)), key=lambda a: (a.window.kind, a.window.size_s)
    )
    tumbling = [a for a in windows if a.window.kind == "tumbling"]
    alerts = sorted(
        (m.event for m in messages if isinstance(m, LiveAlert) and m.event.state == "raised"), key=lambda a: a.since
    )
    return LiveState(
        session=session,
        ts=wall_clock(),
        participants=participants,
        aggregate=tumbling[0] if tumbling else None,
        windows=windows,
        lifecycle=sorted(record.lifecycle.values(), key=lambda e: e.participant) if record else [],
        alerts=alerts,
        questions=record.aggregator.questions()[-QUESTIONS_IN_SNAPSHOT:] if record else [],
    )
