"""A report rebuilt from stored events (a past live session's Kafka log: scores, and when given lifecycle
changes and interactions, which add attendance and questions).

Live participants join at different times and each one's ``media_time`` counts from its own
media start, so rows are placed on **session time**: ``capture_ts`` minus the session's
first capture time (for a single recording this equals media time). Summary figures come
from the same aggregation core as live use and file replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TypeVar

from pydantic import BaseModel

from shared.analytics.config import AggregationConfig
from shared.analytics.privacy import apply_event, redact_report
from shared.analytics.session import SessionAggregator
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import LifecycleEvent, ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.privacy import PrivacyEvent, SessionPrivacy
from shared.contracts.report import Report, ReportParticipant, ReportSession
from shared.contracts.topics import PRIVACY, SCORES

M = TypeVar("M", bound=BaseModel)


class EventLogError(Exception):
    """The event log cannot give this session's events; the message is one user-facing line."""


def report_from_events(
    events: Iterable[ScoreEvent],
    *,
    session: str,
    source: str,
    lifecycle: Iterable[LifecycleEvent] = (),
    interactions: Iterable[InteractionEvent] = (),
) -> Report:
    """Timeline + summary (+ attendance, questions) of one session from its events (any order, duplicates
    allowed). Session time starts at the first score or lifecycle change (a join before the first media)."""
    config = AggregationConfig()
    ordered = sorted(events, key=lambda e: (e.timing.capture_ts, e.participant, e.seq))
    if not ordered:
        raise EventLogError(f"no score events for session {session!r}; check the session id")
    changes = sorted(lifecycle, key=lambda e: e.ts)
    origin = min([ordered[0].timing.capture_ts, *(e.ts for e in changes if e.kind != "session_ended")])
    aggregator = SessionAggregator(session=session, config=config, origin=origin)
    for change in changes:
        aggregator.add_lifecycle(change)
    for interaction in interactions:
        aggregator.add_interaction(interaction)
    timeline = TimelineBuilder()
    end = 0.0
    for e in ordered:
        at = e.timing.capture_ts - origin
        if timeline.add(e, at=at):
            aggregator.add_score(e)
            end = max(end, at + config.step_s)
    aggregator.flush()
    duration = round(end, 3)
    return Report(
        session=ReportSession(id=session, source=source, duration_s=duration),
        participants=[ReportParticipant(id=p, role=r) for p, r in timeline.participants.items()],
        timeline=timeline.rows(duration),
        summary=aggregator.summary(),
        questions=aggregator.questions(),
        attendance=aggregator.attendance(),
    )


def with_privacy(events: list[ScoreEvent], changes: Iterable[PrivacyEvent], *, session: str
                 ) -> tuple[list[ScoreEvent], SessionPrivacy]:
    """The events a report of the session may be built from, and its privacy policy from ``changes``
    (``classpulse.privacy``): nothing from before an erasure, nothing of a participant who opted out."""
    policy = SessionPrivacy(session=session)
    for change in sorted(changes, key=lambda c: c.ts):
        policy = apply_event(policy, change)
    erased = policy.erased_at if policy.erased_at is not None else float("-inf")
    kept = [e for e in events if e.timing.capture_ts > erased and not policy.is_opted_out(e.participant)]
    if events and not kept:
        raise EventLogError(f"session {session!r} was erased or every participant opted out; nothing to rebuild")
    return kept, policy


def private_report(events: list[ScoreEvent], changes: Iterable[PrivacyEvent], *, session: str,
                   source: str) -> Report:
    """:func:`report_from_events` with the session's opt-outs, aggregate-only mode and erasure applied."""
    kept, policy = with_privacy(events, changes, session=session)
    return redact_report(report_from_events(kept, session=session, source=source), policy)


async def fetch_session_scores(
    *, bootstrap: str, session: str, topic: str = SCORES.name, timeout_s: float = 30.0
) -> tuple[list[ScoreEvent], int]:
    """Every score event of ``session`` stored in ``topic`` (read from the beginning up to the current
    end) and the number of that session's records that did not match the contract (skipped).

    Reads without a consumer group (nothing is committed, live consumers are not disturbed).
    """
    return await fetch_session_events(bootstrap=bootstrap, session=session, topic=topic, model=ScoreEvent,
                                      timeout_s=timeout_s)


async def fetch_session_privacy(
    *, bootstrap: str, session: str, topic: str = PRIVACY.name, timeout_s: float = 30.0
) -> list[PrivacyEvent]:
    """The session's privacy changes (none when the topic does not exist: no change was ever made)."""
    changes, _ = await fetch_session_events(bootstrap=bootstrap, session=session, topic=topic, model=PrivacyEvent,
                                            timeout_s=timeout_s, required=False)
    return changes


async def fetch_session_events(
    *, bootstrap: str, session: str, topic: str, model: type[M], timeout_s: float = 30.0, required: bool = True
) -> tuple[list[M], int]:
    """Every ``model`` record of ``session`` in ``topic`` and the count of that session's records that did
    not match it; ``required=False``: a missing topic gives no events (nothing of that kind was recorded).
    ``timeout_s`` bounds connecting and each wait for records (not the whole read of a long log)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    codec = EventCodec(model)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="classpulse-replay",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        await consumer.stop()
        raise EventLogError(f"cannot reach Kafka at {bootstrap} ({exc}); start it or pass --bootstrap") from exc
    try:
        if topic not in await consumer.topics():
            if not required:
                return [], 0
            raise EventLogError(f"Kafka at {bootstrap} has no topic {topic!r}: no live session was recorded there")
        consumer.subscribe([topic])  # without a group: every partition is assigned to this reader
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not consumer.assignment():
            if loop.time() > deadline:
                raise EventLogError(f"timed out reading {topic!r} from Kafka at {bootstrap}; try again")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        wanted = session.encode()
        out: list[M] = []
        skipped = 0
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            if loop.time() > deadline:
                raise EventLogError(f"timed out reading {topic!r} from Kafka at {bootstrap}; try again")
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            if batches:  # a long log takes as long as it takes: only a stall times out
                deadline = loop.time() + timeout_s
            for msgs in batches.values():
                for m in msgs:
                    if m.key != wanted or m.value is None:
                        continue
                    try:
                        out.append(codec.decode(m.value))
                    except DecodeError:
                        skipped += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out, skipped
    finally:
        await consumer.stop()
