"""The class report: ``participants[].source`` only in class mode, the class engagement timeline over
observed students, and the HTML heatmap (participants x seconds) for 4 and for 30 participants."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from services.replay.report_files import write_report
from services.replay.report_html import HEATMAP_STATES, STRIPS_MAX, class_engagement, heatmap_states
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.analytics.timeline import TimelineBuilder
from shared.contracts.events import Role, ScoreEvent
from shared.contracts.report import Report, ReportParticipant, ReportSession
from shared.contracts.timing import TimingTrail

pytestmark = pytest.mark.unit

ORIGIN = 1000.0


def class_report(n: int, seconds: int, *, seed: int = 3) -> Report:
    """A generated class: participant 0 the teacher, the last 30 % joining late, slow random changes."""
    rng = random.Random(seed)
    events: list[ScoreEvent] = []
    people: list[ReportParticipant] = []
    for k in range(n):
        pid, role = ("teacher", "teacher") if k == 0 else (f"student-{k:02d}", "student")
        role_: Role = "teacher" if role == "teacher" else "student"
        offset = 0 if k < n * 0.7 else rng.randint(5, max(6, seconds // 4))
        people.append(ReportParticipant(id=pid, role=role_, source=f"{pid}.webm"))
        here, looking, talking = True, True, False
        for i in range(int((seconds - offset) * 5)):
            here = not here if rng.random() < 0.003 else here
            looking = not looking if rng.random() < 0.004 else looking
            talking = not talking if rng.random() < (0.02 if k == 0 else 0.004) else talking
            t = i / 5
            events.append(ScoreEvent(
                event_id=ScoreEvent.make_id("c", pid, i), session="c", participant=pid, role=role_, seq=i,
                media_time=t, present=here, attentive=here and looking, speaking=talking, hand_raised=False,
                engagement=0.8 if here and looking else 0.3, confidence=0.9,
                timing=TimingTrail(capture_ts=ORIGIN + offset + t),
            ))
    aggregator = SessionAggregator(session="c", config=AggregationConfig(), origin=ORIGIN)
    timeline = TimelineBuilder()
    for e in sorted(events, key=lambda e: e.timing.capture_ts):
        timeline.add(e, at=e.timing.capture_ts - ORIGIN)
        aggregator.add_score(e)
    aggregator.flush()
    return Report(session=ReportSession(id="c", source="class/", duration_s=float(seconds)), participants=people,
                  timeline=timeline.rows(seconds), summary=aggregator.summary())


def test_class_report_json_lists_each_participants_recording(tmp_path: Path) -> None:
    paths = write_report(class_report(4, 20), tmp_path)
    doc = json.loads(paths.json.read_text())
    assert doc["participants"][0] == {"id": "teacher", "role": "teacher", "source": "teacher.webm"}
    assert all(set(p) == {"id", "role", "source"} for p in doc["participants"])
    assert Report.model_validate(doc).participants[1].source == "student-01.webm"
    single = ReportParticipant(id="p1").model_dump(mode="json")
    assert single == {"id": "p1", "role": "student"}  # the single-file contract: no source key


def test_class_engagement_counts_only_observed_students() -> None:
    report = class_report(10, 60)
    klass = class_engagement(report)
    late = {p.id for p in report.participants} - {"teacher"}
    first = klass[0]
    observed_at_0 = [r for r in report.timeline if r.t == 0.0 and r.participant in late and r.confidence > 0]
    assert first.observed == len(observed_at_0) < 9  # late joiners are not counted before they join
    assert first.mean == pytest.approx(float(np.mean([r.engagement for r in observed_at_0])))
    assert all(0.0 <= c.p10 <= c.p90 <= 1.0 and 0.3 <= c.mean <= 0.8 for c in klass)
    assert klass[-1].observed == 9  # the teacher never counts while there are students


def test_heatmap_states_per_second() -> None:
    report = class_report(5, 30)
    order, states, speaking = heatmap_states(report)
    assert order[0] == "teacher" and len(order) == 5 and states.shape == (5, 30)
    rows = {(r.participant, int(r.t)): r for r in report.timeline}
    for i, pid in enumerate(order):
        for j in range(30):
            r = rows[(pid, j)]
            want = 0 if r.confidence == 0 else 3 if r.attentive else 2 if r.present else 1
            assert states[i, j] == want and speaking[i, j] == r.speaking
    assert len(HEATMAP_STATES) == 4


@pytest.mark.parametrize("n", [4, 30])
def test_html_has_a_heatmap_with_one_row_per_participant(tmp_path: Path, n: int) -> None:
    paths = write_report(class_report(n, 300), tmp_path)
    html = paths.html.read_text()
    heat = re.search(r'<figure id="plot-heatmap" class="plot">(<svg.*?</svg>)\s*</figure>', html, re.S)
    assert heat is not None
    svg = heat.group(1)
    for k in range(1, n):
        assert f">student-{k:02d}<" in svg
    assert ">teacher (teacher)<" in svg
    assert svg.count('style="image-rendering:crisp-edges;image-rendering:pixelated"') == 1  # cells, unsmoothed
    for name, _ in HEATMAP_STATES:
        assert f">{name}<" in svg
    assert ('id="plot-strips"' in html) == (n <= STRIPS_MAX)
    assert '<th>recording</th>' in html and "student-01.webm" in html
    assert "participants</td><td>" + f"{n} (1 teacher)" in html
    assert len(html) < 2_000_000


def test_single_participant_report_has_no_heatmap(tmp_path: Path) -> None:
    report = class_report(1, 20)
    report.participants[0].source = None
    html = write_report(report, tmp_path).html.read_text()
    assert 'id="plot-heatmap"' not in html and 'id="plot-strips"' in html and "<th>recording</th>" not in html
