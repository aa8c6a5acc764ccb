"""Attendance: stays from lifecycle and media, reconnects, attended share, late joiners; in the report, the
aggregator snapshot and ``GET .../attendance``."""

from __future__ import annotations

import pytest

from services.aggregator.scripted import Behaviour, Script, constant, lifecycle_event, score_event
from shared.analytics import snapshot
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.contracts.events import LifecycleEvent, ScoreEvent
from shared.contracts.topics import LIFECYCLE
from shared.transport.typed import EventPublisher

from .gateway_fixtures import START, gateway, score, token

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0


def _scores(pid: str, start: float, end: float, *, seq0: int = 0) -> list[ScoreEvent]:
    n = round((end - start) / 0.2)
    return [score_event(session="s", participant=pid, seq=seq0 + i, t=start + i * 0.2, base=BASE, b=Behaviour())
            for i in range(n)]


def _life(pid: str, kind: str, t: float) -> LifecycleEvent:
    return lifecycle_event(session="s", participant=pid, kind=kind, t=t, base=BASE)  # type: ignore[arg-type]


def _feed(agg: SessionAggregator, scores: list[ScoreEvent], life: list[LifecycleEvent]) -> None:
    for e in life:
        agg.add_lifecycle(e)
    for e in sorted(scores, key=lambda e: e.timing.capture_ts):
        agg.add_score(e)
        agg.advance(e.timing.capture_ts)
    agg.flush()


def _class() -> tuple[list[ScoreEvent], list[LifecycleEvent]]:
    """t: teacher 0-600 s; on: 0-600; r: 0-100, leaves, back 400-600; late: joins at 420."""
    scores = [*_scores("t", 0, 600), *_scores("on", 0, 600), *_scores("r", 0, 100),
              *_scores("r", 400, 600, seq0=10_000), *_scores("late", 420, 600)]
    life = [_life("t", "joined", 0.0), _life("on", "joined", 0.0), _life("r", "joined", 0.0),
            _life("r", "left", 130.0), _life("r", "joined", 395.0), _life("late", "joined", 418.0)]
    return scores, life


def test_stays_reconnects_share_and_late_joiners() -> None:
    agg = SessionAggregator(session="s", config=AggregationConfig())
    _feed(agg, *_class())
    att = agg.attendance()
    assert att.duration_s == pytest.approx(600.0, abs=0.3)
    r = att.participants["r"]
    stays = [(i.joined, i.left, i.open) for i in r.intervals]
    assert stays == [(0.0, 130.0, False), (395.0, pytest.approx(600.0, abs=0.3), True)]
    assert r.reconnects == 1
    assert r.attended_s == pytest.approx(130 + 205, abs=0.3)
    assert r.attended_ratio == pytest.approx(335 / 600, abs=0.01)
    assert att.participants["on"].attended_ratio == pytest.approx(1.0, abs=0.01)
    assert att.participants["on"].reconnects == 0
    late = att.participants["late"]
    assert late.late and late.first_joined == pytest.approx(418.0)
    assert att.late_joiners == ["late"]
    assert agg.attendance(late_after_s=500.0).late_joiners == []  # the threshold is a parameter
    assert agg.attendance(late_after_s=60.0).late_joiners == ["late"]  # r came back late, but first joined at 0


def test_without_lifecycle_a_stay_runs_from_first_to_last_media_and_gaps_do_not_split_it() -> None:
    script = Script(session="s", base=BASE)
    script.add("a", constant(), end=300)
    script.add("b", constant(), start=200, end=300)
    events = [e for e in script.events() if not (e.participant == "a" and 100 <= e.media_time < 160)]  # a gap
    agg = SessionAggregator(session="s", config=AggregationConfig(late_after_s=120.0))
    _feed(agg, events, [])
    att = agg.attendance()
    assert len(att.participants["a"].intervals) == 1  # a pipeline gap is nobody's absence
    assert att.participants["a"].attended_s == pytest.approx(300.0, abs=0.3)
    assert att.participants["b"].first_joined == pytest.approx(200.0, abs=0.01)
    assert att.late_joiners == ["b"]


def test_session_end_sets_the_duration_and_is_nobody_s_stay() -> None:
    agg = SessionAggregator(session="s", config=AggregationConfig())
    end = lifecycle_event(session="s", participant="teacher", kind="session_ended", t=700.0, base=BASE, role="teacher")
    _feed(agg, _scores("a", 0, 350), [_life("a", "joined", 0.0), end])
    att = agg.attendance()
    assert set(att.participants) == {"a"}
    assert att.duration_s == pytest.approx(700.0)
    assert att.participants["a"].attended_ratio == pytest.approx(0.5, abs=0.01)


def test_stays_survive_a_snapshot() -> None:
    scores, life = _class()
    agg = SessionAggregator(session="s", config=AggregationConfig())
    for e in life:
        agg.add_lifecycle(e)
    ordered = sorted(scores, key=lambda e: e.timing.capture_ts)
    cut = next(i for i, e in enumerate(ordered) if e.timing.capture_ts - BASE >= 300)  # r left and is away
    for e in ordered[:cut]:
        agg.add_score(e)
        agg.advance(e.timing.capture_ts)
    restored = snapshot.load(snapshot.dump(agg), config=AggregationConfig())
    for e in ordered[cut:]:
        restored.add_score(e)
        restored.advance(e.timing.capture_ts)
    restored.flush()
    reference = SessionAggregator(session="s", config=AggregationConfig())
    _feed(reference, scores, life)
    assert restored.attendance() == reference.attendance()


async def test_attendance_route_and_report() -> None:
    async with gateway(late_after_s=2.0) as h:
        pub = EventPublisher(bus=h.transports.events, topic=LIFECYCLE)
        await pub.publish(LifecycleEvent(event_id="s1/a/j", session="s1", participant="a", kind="joined", ts=START))
        for seq in range(40):
            await h.emit(score("s1", "a", seq))
            if seq >= 20:
                await h.emit(score("s1", "b", seq))
        auth = {"Authorization": f"Bearer {token('s1', 'viewer')}"}
        for _ in range(100):
            resp = await h.client.get("/api/sessions/s1/attendance", headers=auth)
            body = await resp.json()
            if resp.status == 200 and set(body["participants"]) == {"a", "b"}:
                break
        assert body["schema_version"] == 1 and body["late_after_s"] == 2.0
        assert body["late_joiners"] == ["b"]
        assert body["participants"]["b"]["first_joined"] == pytest.approx(4.0, abs=0.3)
        relaxed = await (await h.client.get("/api/sessions/s1/attendance?late_after_s=10", headers=auth)).json()
        assert relaxed["late_joiners"] == []
        bad = await h.client.get("/api/sessions/s1/attendance?late_after_s=soon", headers=auth)
        assert bad.status == 400 and "number" in (await bad.json())["error"]
        platform = {"Authorization": f"Bearer {token('s1', 'platform')}"}
        assert (await h.client.get("/api/sessions/s1/attendance", headers=platform)).status == 200
        student = {"Authorization": f"Bearer {token('s1', 'student', 'a')}"}
        assert (await h.client.get("/api/sessions/s1/attendance", headers=student)).status == 403
        report = await (await h.client.get("/api/sessions/s1/report", headers=auth)).json()
        assert report["attendance"]["late_joiners"] == ["b"]
