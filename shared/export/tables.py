"""The three export tables of one session, built from its report (and alerts): one column list each.

* ``timeline``: one row per participant and second (the report's timeline: ``t``, ``participant``, then
  every behaviour signal of the registry, :data:`shared.signals.OUTPUTS`);
* ``students``: one row per participant: the summary's figures and the attendance (stays as
  ``joined-left`` pairs joined by ``;``);
* ``events``: joins, leaves, alerts and questions in time order (``t`` = seconds of session time).

Used by the gateway's ``GET .../export`` and ``classpulse export`` (the Kafka log), so both give the same
columns. Columns are typed (:data:`Kind`) for Parquet's schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.contracts.events import Alert
from shared.contracts.report import ParticipantSummary, Report
from shared.signals import OUTPUTS

Kind = Literal["float", "int", "bool", "str"]
TableName = Literal["timeline", "students", "events"]
TABLES: tuple[TableName, ...] = ("timeline", "students", "events")
Row = tuple[object, ...]


@dataclass(frozen=True)
class Table:
    name: TableName
    columns: tuple[tuple[str, Kind], ...]
    rows: Iterable[Row]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


def _kind(signal_kind: str) -> Kind:
    return "bool" if signal_kind == "flag" else "float"


TIMELINE_COLUMNS: tuple[tuple[str, Kind], ...] = (
    ("t", "float"), ("participant", "str"), *((s.name, _kind(s.kind)) for s in OUTPUTS)
)
_SUMMARY: tuple[tuple[str, Kind], ...] = (
    ("present_ratio", "float"), ("attentive_ratio", "float"), ("engagement_mean", "float"),
    ("talk_time_s", "float"), ("turns", "int"), ("hand_raises", "int"), ("away_time_s", "float"),
    ("questions", "int"), ("chat_messages", "int"), ("words_spoken", "int"), ("on_topic_ratio", "float"),
)
STUDENT_COLUMNS: tuple[tuple[str, Kind], ...] = (
    ("participant", "str"), ("role", "str"), *_SUMMARY,
    ("first_joined", "float"), ("last_left", "float"), ("attended_s", "float"), ("attended_ratio", "float"),
    ("reconnects", "int"), ("late", "bool"), ("stays", "str"),
)
EVENT_COLUMNS: tuple[tuple[str, Kind], ...] = (
    ("t", "float"), ("kind", "str"), ("participant", "str"), ("detail", "str"),
)


_VOTED = ("present", "attentive", "speaking", "hand_raised", "engagement", "confidence")
"""The order of :meth:`shared.analytics.timeline.SecondVotes.voted` (checked against the registry below)."""


def timeline_from_tuples(rows: Iterable[Row]) -> Table:
    """The timeline table from :meth:`shared.analytics.timeline.TimelineBuilder.observed_tuples`."""
    if tuple(s.name for s in OUTPUTS) != _VOTED:
        raise RuntimeError("the signal registry's outputs changed: update SecondVotes.voted and this table")
    return Table("timeline", TIMELINE_COLUMNS, rows)


def _timeline(report: Report) -> Iterator[Row]:
    names = [s.name for s in OUTPUTS]
    for r in report.timeline:
        yield (r.t, r.participant, *(getattr(r, n) for n in names))


def _students(report: Report) -> Iterator[Row]:
    attendance = report.attendance.participants if report.attendance is not None else {}
    summary = report.summary.participants
    roles = {p.id: p.role for p in report.participants}
    for pid in sorted(set(summary) | set(attendance) | set(roles)):
        s: ParticipantSummary | None = summary.get(pid)
        a = attendance.get(pid)
        role = s.role if s is not None else a.role if a is not None else roles[pid]
        figures = tuple(getattr(s, name) if s is not None else None for name, _ in _SUMMARY)
        stays = ";".join(f"{i.joined:g}-{i.left:g}" for i in a.intervals) if a is not None else None
        attended = (a.first_joined, a.last_left, a.attended_s, a.attended_ratio, a.reconnects, a.late, stays) \
            if a is not None else (None,) * 7
        yield (pid, role, *figures, *attended)


def _events(report: Report, alerts: Sequence[Alert]) -> Iterator[Row]:
    rows: list[Row] = []
    if report.attendance is not None:
        for pid, a in report.attendance.participants.items():
            for stay in a.intervals:
                rows.append((stay.joined, "joined", pid, ""))
                if not stay.open:
                    rows.append((stay.left, "left", pid, ""))
    for alert in alerts:
        rows.append((alert.at, f"alert_{alert.state}", alert.participant or "", alert.kind))
    for q in report.questions:
        rows.append((q.t, "question", q.participant, f"{q.kind} via {q.source}"))
    rows.sort(key=lambda r: (float(r[0]), str(r[1]), str(r[2])))  # type: ignore[arg-type]
    return iter(rows)


def build_table(name: TableName, report: Report, *, alerts: Sequence[Alert] = ()) -> Table:
    if name == "timeline":
        return Table(name, TIMELINE_COLUMNS, _timeline(report))
    if name == "students":
        return Table(name, STUDENT_COLUMNS, _students(report))
    return Table(name, EVENT_COLUMNS, _events(report, alerts))
