"""Turn closed time buckets into one window's :class:`ClassAggregate`.

The window step of :class:`shared.analytics.session.SessionAggregator` (which also uses the
class attentive ratio for its attention-dip alert).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from shared.analytics.equity import gini, participation, percentile, ratio
from shared.analytics.state import Cell
from shared.contracts.events import ClassAggregate, ParticipantWindow, WindowRef
from shared.contracts.timing import TimingTrail

WindowKey = tuple[str, int, int]
"""(kind, size in buckets, first bucket) of an open window."""

PRESENT_MIN_RATIO = 0.5
"""A participant counts as present in a window when in frame at least this share of it."""


def window_id(session: str, window: WindowRef) -> str:
    return f"{session}/{window.kind}/{window.size_s:g}/{window.start:g}"


def class_attentive_ratio(cells: Mapping[str, Cell]) -> float | None:
    """Mean attentive ratio of the students with data (everyone when there is no student); None: no data."""
    observed = [c for c in cells.values() if c.observed > 0]
    students = [c for c in observed if c.role == "student"] or observed
    if not students:
        return None
    return sum(ratio(c.attentive, c.observed) for c in students) / len(students)


def build_aggregate(
    *,
    session: str,
    kind: Literal["tumbling", "hopping"],
    start: float,
    end: float,
    origin: float,
    cells: Mapping[str, Cell],
    wait_time_s: float | None,
    response_latency_s: float | None = None,
) -> ClassAggregate:
    """The class aggregate of one window from its merged per-participant cells."""
    window = WindowRef(kind=kind, size_s=end - start, start=start, end=end)
    parts: dict[str, ParticipantWindow] = {}
    for pid in sorted(cells):
        c = cells[pid]
        if c.observed <= 0:
            continue
        parts[pid] = ParticipantWindow(
            role=c.role,
            present_ratio=ratio(c.present, c.observed),
            attentive_ratio=ratio(c.attentive, c.observed),
            engagement_mean=ratio(c.engagement, c.observed),
            talk_time_s=c.talk,
            turns=c.turns,
            hand_raised=c.hand_any,
        )
    students = [pid for pid, p in parts.items() if p.role == "student"]
    focus = students or list(parts)
    engagement: Sequence[float] = [parts[p].engagement_mean for p in focus]
    teacher_talk = sum(p.talk_time_s for p in parts.values() if p.role == "teacher")
    total_talk = sum(p.talk_time_s for p in parts.values())
    queue = sorted(
        ((c.hand_since if c.hand_since is not None else start, pid) for pid, c in cells.items() if c.hand_last),
    )
    attentive = class_attentive_ratio({p: cells[p] for p in parts})
    voters = [pid for pid, c in cells.items() if c.role == "student" and (c.observed > 0 or c.messages > 0)]
    shares = participation({p: cells[p].talk for p in voters}, {p: float(cells[p].messages) for p in voters})
    return ClassAggregate(
        event_id=window_id(session, window),
        session=session,
        window=window,
        participants_total=len(parts),
        participants_present=sum(1 for p in parts.values() if p.present_ratio >= PRESENT_MIN_RATIO),
        attentive_ratio=attentive if attentive is not None else 0.0,
        engagement_mean=min(1.0, sum(engagement) / len(engagement)) if engagement else 0.0,
        engagement_p10=min(1.0, percentile(engagement, 10)),
        engagement_p90=min(1.0, percentile(engagement, 90)),
        teacher_talk_share=ratio(teacher_talk, total_talk),
        talk_equity_gini=gini([parts[p].talk_time_s for p in students]),
        hand_equity_gini=gini([float(cells[p].hand_raises) for p in students]),
        wait_time_s=wait_time_s,
        hand_queue=[pid for _, pid in queue],
        questions_students=sum(c.questions for c in cells.values() if c.role == "student"),
        questions_teacher=sum(c.questions for c in cells.values() if c.role == "teacher"),
        chat_messages=sum(c.messages for c in cells.values()),
        participation_equity_gini=gini(list(shares.values())),
        response_latency_s=response_latency_s,
        participants=parts,
        timing=TimingTrail(capture_ts=origin + end),
    )
