"""The live snapshot of one session, read from the live bus's latest-state hash."""

from __future__ import annotations

from services.gateway.history import SessionRecord
from services.gateway.models import LiveParticipant, LiveState
from shared.analytics.privacy import redact_aggregate, redact_questions, visible_alert
from shared.contracts.live import LiveAggregate, LiveAlert, LiveScore
from shared.contracts.privacy import SessionPrivacy
from shared.contracts.timing import wall_clock
from shared.transport.base import LiveBus
from shared.transport.live import read_state

QUESTIONS_IN_SNAPSHOT = 200
"""Most recent questions in a live snapshot (the dashboard's queue)."""


async def live_state(
    bus: LiveBus, session: str, record: SessionRecord | None = None, policy: SessionPrivacy | None = None
) -> LiveState:
    """The live bus's latest state of ``session``, plus lifecycle from the gateway's history (``record``),
    with the session's privacy ``policy`` applied (opted-out participants and, in aggregate-only mode,
    every per-student part left out)."""
    policy = policy or SessionPrivacy(session=session)
    messages = await read_state(bus, session)
    participants = sorted(
        (
            LiveParticipant.from_score(
                m.event, record.aggregator.interaction_counts(m.event.participant) if record else None
            )
            for m in messages
            if isinstance(m, LiveScore) and not policy.hides(m.event.participant)
        ),
        key=lambda p: p.participant,
    )
    windows = sorted(
        (redact_aggregate(m.event, policy) for m in messages if isinstance(m, LiveAggregate)),
        key=lambda a: (a.window.kind, a.window.size_s),
    )
    tumbling = [a for a in windows if a.window.kind == "tumbling"]
    alerts = sorted(
        (m.event for m in messages
         if isinstance(m, LiveAlert) and m.event.state == "raised" and visible_alert(m.event, policy)),
        key=lambda a: a.since,
    )
    lifecycle = sorted(record.lifecycle.values(), key=lambda e: e.participant) if record else []
    return LiveState(
        session=session,
        ts=wall_clock(),
        participants=participants,
        aggregate=tumbling[0] if tumbling else None,
        windows=windows,
        lifecycle=[] if policy.aggregate_only else lifecycle,
        alerts=alerts,
        questions=redact_questions(record.aggregator.questions(), policy)[-QUESTIONS_IN_SNAPSHOT:] if record else [],
        aggregate_only=policy.aggregate_only,
        opted_out=[] if policy.aggregate_only else list(policy.opted_out),
    )
