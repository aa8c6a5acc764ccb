"""Attendance rules: each participant's stays in the session (join -> leave), attended share, late joiners.

A stay begins at a 'joined' lifecycle event or at the first media after the participant was away
('left', or never seen); media extends it; 'left' ends it. A gap in the scores alone never ends a stay
(a broker pause or a worker restart is the pipeline's, not the participant's: the fault tier's rule);
a reconnect announces itself with 'left' then 'joined'. Without lifecycle events (a recording) a stay
runs from the participant's first to last media. All times are seconds of session time.

Owned by :class:`shared.analytics.session.SessionAggregator` (its participants' ``stays``), so the
aggregator service, the gateway's live report and ``classpulse replay`` share one rule.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.analytics.state import Participant
from shared.contracts.attendance import Attendance, AttendanceInterval, ParticipantAttendance


def media(p: Participant, start: float, end: float) -> None:
    """Media of ``p`` from ``start`` to ``end``: extends the open stay, or opens one after a leave."""
    if not p.stays or p.left:
        p.stays.append([start, end])
    else:
        last = p.stays[-1]
        last[1] = max(last[1], end)


def joined(p: Participant, t: float) -> None:
    """A 'joined' at ``t``: opens a stay unless one is open (a repeated join continues it)."""
    if not p.stays or p.left:
        p.stays.append([t, t])


def left(p: Participant, t: float) -> None:
    """A 'left' at ``t``: ends the open stay there (never before its last media)."""
    if p.stays and not p.left:
        last = p.stays[-1]
        last[1] = max(last[1], t)


def _r(value: float) -> float:
    return round(max(0.0, value), 3)


def build_attendance(
    *, session: str, participants: Mapping[str, Participant], duration_s: float, late_after_s: float
) -> Attendance:
    """The attendance of every participant with a stay; ``duration_s`` is at least the latest stay's end."""
    ends = [stay[1] for p in participants.values() for stay in p.stays]
    duration = max(duration_s, *ends) if ends else duration_s
    out: dict[str, ParticipantAttendance] = {}
    for pid in sorted(participants):
        p = participants[pid]
        if not p.stays:
            continue
        intervals = [
            AttendanceInterval(joined=_r(start), left=_r(max(start, end)), open=i == len(p.stays) - 1 and not p.left)
            for i, (start, end) in enumerate(p.stays)
        ]
        attended = sum(max(0.0, end - start) for start, end in p.stays)
        first = intervals[0].joined
        out[pid] = ParticipantAttendance(
            role=p.role,
            intervals=intervals,
            first_joined=first,
            last_left=intervals[-1].left,
            attended_s=_r(attended),
            attended_ratio=min(1.0, attended / duration) if duration > 0 else 0.0,
            reconnects=len(intervals) - 1,
            late=first > late_after_s,
        )
    return Attendance(
        session=session,
        duration_s=_r(duration),
        late_after_s=late_after_s,
        participants=out,
        late_joiners=[pid for pid, a in out.items() if a.late],
    )
