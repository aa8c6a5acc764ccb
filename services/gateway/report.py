"""A live session's report (the replay report's shape) from the gateway's history.

The timeline is the gateway's per-second rows; the summary comes from the same
aggregation core (:class:`shared.analytics.session.SessionAggregator`) that the
aggregator service and ``classpulse replay`` use, fed with every score the gateway saw.
"""

from __future__ import annotations

import copy

from services.gateway.history import SessionRecord
from shared.contracts.report import Report, ReportParticipant, ReportSession


def build_report(record: SessionRecord) -> Report:
    if record.ended:
        aggregator = record.aggregator
    else:  # close everything seen so far on a copy; the live aggregation keeps its lateness allowance
        aggregator = copy.deepcopy(record.aggregator)
    aggregator.flush()
    summary = aggregator.summary()
    return Report(
        session=ReportSession(id=record.id, source="live", duration_s=max(summary.duration_s, record.duration_s())),
        participants=[ReportParticipant(id=pid, role=p.role) for pid, p in record.participants.items()],
        timeline=record.timeline.observed_rows(),
        summary=summary,
        questions=aggregator.questions(),
    )
