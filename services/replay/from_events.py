"""A report rebuilt from stored score events (a past live session's Kafka log).

Live participants join at different times and each one's ``media_time`` counts from its own
media start, so rows are placed on **session time**: ``capture_ts`` minus the session's
first capture time (for a single recording this equals media time). Summary figures come
from the same aggregation core as live use and file replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import ScoreEvent
from shared.contracts.report import Report, ReportParticipant, ReportSession
from shared.contracts.topics import SCORES


class EventLogError(Exception):
    """The event log cannot give this session's events; the message is one user-facing line."""


def report_from_events(events: Iterable[ScoreEvent], *, session: str, source: str) -> Report:
    """Timeline + summary of one session from its score events (any order, duplicates allowed)."""
    config = AggregationConfig()
    ordered = sorted(events, key=lambda e: (e.timing.capture_ts, e.participant, e.seq))
    if not ordered:
        raise EventLogError(f"no score events for session {session!r}; check the session id")
    origin = ordered[0].timing.capture_ts
    aggregator = SessionAggregator(session=session, config=config, origin=origin)
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
        attendance=aggregator.attendance(),
    )


async def fetch_session_scores(
    *, bootstrap: str, session: str, topic: str = SCORES.name, timeout_s: float = 30.0
) -> tuple[list[ScoreEvent], int]:
    """Every score event of ``session`` stored in ``topic`` (read from the beginning up to the current
    end) and the number of that session's records that did not match the contract (skipped).

    Reads without a consumer group (nothing is committed, live consumers are not disturbed).
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    codec = EventCodec(ScoreEvent)
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
        out: list[ScoreEvent] = []
        skipped = 0
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            if loop.time() > deadline:
                raise EventLogError(f"timed out reading {topic!r} from Kafka at {bootstrap}; try again")
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
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
