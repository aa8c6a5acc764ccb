"""A live session's report (the replay report's shape) and attendance from the gateway's history.

The timeline is the gateway's per-second rows; the summary and attendance come from the same
aggregation core (:class:`shared.analytics.session.SessionAggregator`) that the aggregator service
and ``classpulse replay`` use, fed with every score and lifecycle event the gateway saw.
"""

from __future__ import annotations

import copy

from services.gateway.history import SessionRecord
from shared.analytics.session import SessionAggregator
from shared.contracts.attendance import Attendance
from shared.contracts.report import Report, ReportParticipant, ReportSession


def closed_aggregator(record: SessionRecord) -> SessionAggregator:
    """The session's aggregation with everything seen so far closed (a copy while the session runs: the
    live aggregation keeps its lateness allowance)."""
    aggregator = record.aggregator if record.ended else copy.deepcopy(record.aggregator)
    aggregator.flush()
    return aggregator


def build_report(record: SessionRecord, *, timeline: bool = True) -> Report:
    """The report; ``timeline=False`` leaves the per-second rows out (the webhook payload)."""
    aggregator = closed_aggregator(record)
    summary = aggregator.summary()
    return Report(
        session=ReportSession(id=record.id, source="live", duration_s=max(summary.duration_s, record.duration_s())),
        participants=[ReportParticipant(id=pid, role=p.role) for pid, p in record.participants.items()],
        timeline=record.timeline.observed_rows() if timeline else [],
        summary=summary,
        questions=aggregator.questions(),
        attendance=aggregator.attendance(),
    )


def build_attendance(record: SessionRecord, *, late_after_s: float | None = None) -> Attendance:
    return closed_aggregator(record).attendance(late_after_s=late_after_s)
