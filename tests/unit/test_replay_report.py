"""Report files: report.json exactly per the public contract, timeline.csv, self-contained report.html."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from services.replay.from_events import report_from_events
from services.replay.report_files import CSV_COLUMNS, write_report
from shared.contracts.events import ScoreEvent
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit


def _events() -> list[ScoreEvent]:
    """Two participants, 12 s at 5 steps/s: a teacher talking first, a student who looks away then talks."""
    out = []
    for pid, role in (("teacher-1", "teacher"), ("s<1>&", "student")):
        for i in range(60):
            t = i / 5
            student = role == "student"
            out.append(ScoreEvent(
                event_id=ScoreEvent.make_id("math", pid, i), session="math", participant=pid, role=role, seq=i,
                media_time=t, present=not (student and 4 <= t < 6), attentive=not (student and 4 <= t < 8),
                speaking=(t < 5) if not student else (8 <= t < 11), hand_raised=student and 6 <= t < 7,
                engagement=0.3 if student and 4 <= t < 8 else 0.8, confidence=0.9,
                timing=TimingTrail(capture_ts=5000.0 + t),
            ))
    return out


@pytest.fixture
def written(tmp_path: Path) -> Path:
    report = report_from_events(_events(), session="math", source="unit-test")
    report.warnings.append("media truncated at 11.0 s <test>")
    write_report(report, tmp_path / "out")
    return tmp_path / "out"


def test_report_json_has_exactly_the_contract_keys(written: Path) -> None:
    doc = json.loads((written / "report.json").read_text())
    assert {"session", "participants", "timeline", "summary"} <= set(doc)
    assert set(doc["session"]) == {"id", "source", "duration_s"}
    assert doc["session"]["id"] == "math" and doc["session"]["duration_s"] == pytest.approx(12.0)
    assert sorted(doc["participants"], key=lambda p: p["id"]) == [
        {"id": "s<1>&", "role": "student"}, {"id": "teacher-1", "role": "teacher"}
    ]
    row_keys = {"t", "participant", "present", "attentive", "speaking", "hand_raised", "engagement", "confidence"}
    assert all(set(r) == row_keys for r in doc["timeline"])
    assert len(doc["timeline"]) == 2 * 12  # one row per participant per second
    types = {k: type(v) for k, v in doc["timeline"][0].items()}
    assert types == {"t": float, "participant": str, "present": bool, "attentive": bool, "speaking": bool,
                     "hand_raised": bool, "engagement": float, "confidence": float}
    student = doc["summary"]["participants"]["s<1>&"]
    for key, typ in (("present_ratio", float), ("attentive_ratio", float), ("talk_time_s", float),
                     ("hand_raises", int)):
        assert isinstance(student[key], typ)
    assert student["hand_raises"] == 1
    assert student["talk_time_s"] == pytest.approx(3.0, abs=0.25)
    assert student["present_ratio"] == pytest.approx(10 / 12, abs=0.02)
    assert doc["summary"]["teacher_talk_share"] == pytest.approx(5 / 8, abs=0.03)


def test_timeline_csv_matches_json(written: Path) -> None:
    doc = json.loads((written / "report.json").read_text())
    with (written / "timeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(doc["timeline"])
    for c, j in zip(rows, doc["timeline"], strict=True):
        assert float(c["t"]) == j["t"] and c["participant"] == j["participant"]
        assert c["speaking"] == ("true" if j["speaking"] else "false")
        assert float(c["engagement"]) == pytest.approx(j["engagement"], abs=1e-4)


def test_html_is_self_contained_with_three_plots_and_escaped_text(written: Path) -> None:
    html = (written / "report.html").read_text()
    for key in ("engagement", "strips", "talk-time"):
        assert re.search(rf'<figure id="plot-{key}" class="plot"><svg', html), key
    assert not re.search(r'(src|href)="(https?:)?//', html), "no remote assets (readable offline, no CDN)"
    assert "<script" not in html
    assert "s&lt;1&gt;&amp;" in html and "s<1>&" not in html.replace("s&lt;1&gt;&amp;", "")
    assert "media truncated at 11.0 s &lt;test&gt;" in html
    assert "teacher talk share" in html


def test_empty_report_renders_without_warnings(tmp_path: Path) -> None:
    import warnings

    from shared.contracts.report import Report, ReportSession, SessionSummary

    empty = Report(session=ReportSession(id="x", source="y.mp4", duration_s=0.0), participants=[], timeline=[],
                   summary=SessionSummary())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_report(empty, tmp_path)
    assert paths.csv.read_text() == ",".join(CSV_COLUMNS) + "\n"
    assert json.loads(paths.json.read_text())["timeline"] == []
