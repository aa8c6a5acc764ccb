"""A live session's report (the replay report's shape) from the gateway's history.

Per-participant figures come from the per-second timeline (one row = one second);
class figures from the class aggregates the aggregator published.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from services.gateway.history import SessionRecord
from shared.contracts.report import (
    ParticipantSummary,
    Report,
    ReportParticipant,
    ReportSession,
    SessionSummary,
    TimelineRow,
)


def _rising(values: Iterable[bool]) -> int:
    """Number of false -> true edges (a true first value counts)."""
    count, prev = 0, False
    for value in values:
        count += value and not prev
        prev = value
    return count


def _participant_summary(rows: list[TimelineRow], role: str) -> ParticipantSummary:
    n = len(rows)
    hand_raises = _rising(r.hand_raised for r in rows)
    turns = _rising(r.speaking for r in rows)
    return ParticipantSummary(
        role="teacher" if role == "teacher" else "student",
        present_ratio=sum(r.present for r in rows) / n if n else 0.0,
        attentive_ratio=sum(r.attentive for r in rows) / n if n else 0.0,
        talk_time_s=float(sum(r.speaking for r in rows)),
        hand_raises=hand_raises,
        turns=turns,
        engagement_mean=sum(r.engagement for r in rows) / n if n else 0.0,
        away_time_s=float(sum(not r.present for r in rows)),
        joined_at=rows[0].t if rows else None,
    )


def build_report(record: SessionRecord) -> Report:
    rows = record.timeline.rows()
    per: dict[str, list[TimelineRow]] = defaultdict(list)
    for row in rows:
        per[row.participant].append(row)
    participants = {pid: _participant_summary(per.get(pid, []), part.role) for pid, part in record.participants.items()}
    aggs = list(record.aggregates)
    n = len(aggs)
    waits = [a.wait_time_s for a in aggs if a.wait_time_s is not None]
    last = aggs[-1] if aggs else None
    summary = SessionSummary(
        participants=participants,
        duration_s=record.duration_s(),
        engagement_mean=sum(a.engagement_mean for a in aggs) / n if n else 0.0,
        attentive_ratio=sum(a.attentive_ratio for a in aggs) / n if n else 0.0,
        teacher_talk_share=sum(a.teacher_talk_share for a in aggs) / n if n else 0.0,
        talk_equity_gini=last.talk_equity_gini if last else 0.0,
        hand_equity_gini=last.hand_equity_gini if last else 0.0,
        mean_wait_time_s=sum(waits) / len(waits) if waits else None,
        alerts_raised=sum(1 for a in record.alerts if a.state == "raised"),
    )
    return Report(
        session=ReportSession(id=record.id, source="live", duration_s=record.duration_s()),
        participants=[ReportParticipant(id=pid, role=p.role) for pid, p in record.participants.items()],
        timeline=rows,
        summary=summary,
    )
