"""Export tables and writers (CSV, JSON Lines, Parquet) and the gateway's streamed ``GET .../export``."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from shared.contracts.attendance import Attendance, AttendanceInterval, ParticipantAttendance
from shared.contracts.report import ParticipantSummary, Report, ReportSession, SessionSummary, TimelineRow
from shared.export.tables import EVENT_COLUMNS, STUDENT_COLUMNS, TIMELINE_COLUMNS, build_table
from shared.export.writers import write_table

from .gateway_fixtures import alert, gateway, score, token

pytestmark = pytest.mark.unit


def _report(seconds: int = 50) -> Report:
    rows = [TimelineRow(t=float(t), participant=p, present=True, attentive=t % 2 == 0, speaking=False,
                        hand_raised=p == "b" and t == 3, engagement=0.5, confidence=0.9)
            for t in range(seconds) for p in ("a", "b")]
    summary = SessionSummary(participants={p: ParticipantSummary(present_ratio=1.0, attentive_ratio=0.5,
                                                                 talk_time_s=0.0, hand_raises=int(p == "b"))
                                           for p in ("a", "b")})
    stays = {"a": [AttendanceInterval(joined=0.0, left=float(seconds), open=True)],
             "b": [AttendanceInterval(joined=0.0, left=10.0), AttendanceInterval(joined=20.0, left=float(seconds),
                                                                                 open=True)]}
    attendance = Attendance(session="s", duration_s=seconds, late_after_s=300.0, participants={
        p: ParticipantAttendance(intervals=iv, first_joined=iv[0].joined, last_left=iv[-1].left,
                                 attended_s=sum(i.left - i.joined for i in iv), attended_ratio=0.5,
                                 reconnects=len(iv) - 1, late=False) for p, iv in stays.items()})
    return Report(session=ReportSession(id="s", source="test", duration_s=seconds), participants=[],
                  timeline=rows, summary=summary, attendance=attendance)


def _all(chunks: object) -> bytes:
    return b"".join(chunks)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,columns", [("timeline", TIMELINE_COLUMNS), ("students", STUDENT_COLUMNS),
                                          ("events", EVENT_COLUMNS)])
def test_three_formats_hold_the_same_rows(name: str, columns: tuple[tuple[str, str], ...]) -> None:
    report = _report()
    tables = {fmt: _all(write_table(build_table(name, report, alerts=[alert("s", "a")]), fmt))  # type: ignore[arg-type]
              for fmt in ("csv", "jsonl", "parquet")}
    from_csv = list(csv.DictReader(io.StringIO(tables["csv"].decode())))
    from_jsonl = [json.loads(line) for line in tables["jsonl"].decode().splitlines()]
    from_parquet = pq.read_table(io.BytesIO(tables["parquet"])).to_pylist()
    assert len(from_csv) == len(from_jsonl) == len(from_parquet) > 0
    assert list(from_csv[0]) == list(from_jsonl[0]) == list(from_parquet[0]) == [c for c, _ in columns]
    assert from_jsonl == from_parquet  # typed: floats, bools, ints, strings alike
    if name == "timeline":
        assert len(from_parquet) == 100 and from_csv[7]["hand_raised"] == "true"
    if name == "students":
        b = next(r for r in from_parquet if r["participant"] == "b")
        assert b["reconnects"] == 1 and b["stays"] == "0-10;20-50" and b["hand_raises"] == 1
    if name == "events":
        kinds = [(r["t"], r["kind"], r["participant"]) for r in from_parquet]
        assert (10.0, "left", "b") in kinds and (20.0, "joined", "b") in kinds
        assert ("alert_raised", "away") in {(r["kind"], r["detail"]) for r in from_parquet}
        assert kinds == sorted(kinds)


def test_parquet_is_written_in_row_groups_as_it_goes() -> None:
    chunks = list(write_table(build_table("timeline", _report(seconds=25_000)), "parquet"))
    assert len(chunks) >= 3  # 50,000 rows: several row groups, each handed over when written
    assert pq.ParquetFile(io.BytesIO(b"".join(chunks))).metadata.num_rows == 50_000


def test_an_empty_table_is_a_valid_file() -> None:
    empty = Report(session=ReportSession(id="s", source="t", duration_s=0), participants=[], timeline=[],
                   summary=SessionSummary())
    assert pq.read_table(io.BytesIO(_all(write_table(build_table("timeline", empty), "parquet")))).num_rows == 0
    assert _all(write_table(build_table("timeline", empty), "csv")).decode().startswith("t,participant,")


async def test_gateway_streams_each_format_and_rejects_bad_choices() -> None:
    async with gateway() as h:
        for seq in range(30):
            await h.emit(score("s1", "alice", seq))
        auth = {"Authorization": f"Bearer {token('s1', 'platform')}"}
        for _ in range(100):
            resp = await h.client.get("/api/sessions/s1/export?format=jsonl", headers=auth)
            if resp.status == 200 and len((await resp.read()).splitlines()) >= 5:
                break
        resp = await h.client.get("/api/sessions/s1/export?format=parquet&table=timeline", headers=auth)
        assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
        assert resp.headers["Content-Type"] == "application/vnd.apache.parquet"
        assert 'filename="s1-timeline.parquet"' in resp.headers["Content-Disposition"]
        rows = pq.read_table(io.BytesIO(await resp.read())).to_pylist()
        assert {r["participant"] for r in rows} == {"alice"} and len(rows) >= 5
        students = await h.client.get("/api/sessions/s1/export?format=csv&table=students", headers=auth)
        assert students.headers["Content-Type"].startswith("text/csv")
        assert [r["participant"] for r in csv.DictReader(io.StringIO(await students.text()))] == ["alice"]
        bad = await h.client.get("/api/sessions/s1/export?format=xlsx", headers=auth)
        assert bad.status == 400 and "csv, jsonl, parquet" in (await bad.json())["error"]
        bad = await h.client.get("/api/sessions/s1/export?table=people", headers=auth)
        assert bad.status == 400 and "timeline, students, events" in (await bad.json())["error"]
        missing = await h.client.get("/api/sessions/nope/export", headers={
            "Authorization": f"Bearer {token('nope', 'viewer')}"})
        assert missing.status == 404
        student = {"Authorization": f"Bearer {token('s1', 'student', 'alice')}"}
        assert (await h.client.get("/api/sessions/s1/export", headers=student)).status == 403


def test_gateway_timeline_tuples_equal_the_timeline_rows() -> None:
    from shared.analytics.timeline import TimelineBuilder

    builder = TimelineBuilder(max_rows=1000)
    for seq in range(40):
        builder.add(score("s", "a", seq, hand=seq % 3 == 0, speaking=seq > 20, engagement=(seq % 10) / 10))
        builder.add(score("s", "b", seq, present=seq % 2 == 0))
    rows = builder.observed_rows()
    assert builder.observed_tuples() == [tuple(r.model_dump().values()) for r in rows]
    assert list(rows[0].model_dump()) == [c for c, _ in TIMELINE_COLUMNS]
