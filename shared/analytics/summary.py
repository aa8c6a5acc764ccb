"""Whole-session figures (:class:`SessionSummary`) from the participants' running totals.

The summary step of :class:`shared.analytics.session.SessionAggregator`, the counterpart of
:func:`shared.analytics.windows.build_aggregate` for one window.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from shared.analytics.equity import gini, participation, ratio
from shared.analytics.interactions import Response
from shared.analytics.state import Participant
from shared.contracts.report import ParticipantSummary, SessionSummary


def build_summary(
    *,
    participants: Mapping[str, Participant],
    waits: Sequence[tuple[float, float]],
    alerts_raised: int,
    late_after_s: float,
    questions_by_role: Mapping[str, int] | None = None,
    responses: Sequence[Response] = (),
) -> SessionSummary:
    """The session summary (``waits``: (time, wait) pairs).

    Participants with observed media time count in every figure; one who only wrote (chat,
    questions) is listed with its interaction counts but stays out of the media figures.
    """
    parts: dict[str, ParticipantSummary] = {}
    for pid in sorted(participants):
        p = participants[pid]
        if p.observed <= 0 and not p.interacted:
            continue
        parts[pid] = ParticipantSummary(
            role=p.role,
            present_ratio=ratio(p.present, p.observed),
            attentive_ratio=ratio(p.attentive, p.observed),
            talk_time_s=p.talk,
            hand_raises=p.hand_raises,
            turns=p.turns,
            engagement_mean=ratio(p.engagement, p.observed),
            away_time_s=max(0.0, p.observed - p.present),
            joined_at=p.joined_at,
            late=p.joined_at is not None and p.joined_at > late_after_s,
            questions=p.questions,
            chat_messages=p.chat_messages,
            words_spoken=p.words_spoken,
            on_topic_ratio=ratio(p.on_topic_messages, p.judged_messages) if p.judged_messages else None,
        )
    actors = {k: v for k, v in participants.items() if k in parts and v.observed > 0}
    students = [p for p in actors.values() if p.role == "student"] or list(actors.values())
    observed = sum(p.observed for p in students)
    teacher_talk = sum(p.talk for p in actors.values() if p.role == "teacher")
    total_talk = sum(p.talk for p in actors.values())
    only_students = [p for p in actors.values() if p.role == "student"]
    student_ids = [k for k in parts if participants[k].role == "student"]
    shares = participation({k: participants[k].talk for k in student_ids},
                           {k: float(participants[k].chat_messages) for k in student_ids})
    return SessionSummary(
        participants=parts,
        duration_s=max((p.last_end or 0.0 for p in actors.values()), default=0.0),
        engagement_mean=ratio(sum(p.engagement for p in students), observed),
        attentive_ratio=ratio(sum(p.attentive for p in students), observed),
        teacher_talk_share=ratio(teacher_talk, total_talk),
        talk_equity_gini=gini([p.talk for p in only_students]),
        hand_equity_gini=gini([float(p.hand_raises) for p in only_students]),
        mean_wait_time_s=sum(w for _, w in waits) / len(waits) if waits else None,
        alerts_raised=alerts_raised,
        questions_students=(questions_by_role or {}).get("student", 0),
        questions_teacher=(questions_by_role or {}).get("teacher", 0),
        teacher_questions_answered=len(responses),
        response_latency_s=statistics.median(r.latency_s for r in responses) if responses else None,
        participation_equity_gini=gini(list(shares.values())),
    )
