"""Gateway REST routes on memory transports: live state, session, participants, timeline, report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.gateway.context import GATEWAY
from shared.contracts.report import Report, TimelineRow

from .gateway_fixtures import aggregate, alert, auth, gateway, score

pytestmark = pytest.mark.unit


async def until(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_live_state_has_timeline_keys_plus_ts_and_class_aggregate() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "alice", 1, engagement=0.4))
        await h.emit(score("s1", "alice", 2, engagement=0.8, hand=True))
        await h.emit(score("s1", "bob", 1, present=False, engagement=0.1))
        await h.emit(aggregate("s1", 0.0, hand_queue=["alice"]))
        await h.emit(alert("s1", "bob"))
        resp = await h.client.get("/api/sessions/s1/live", headers=auth("s1", "viewer"))
        assert resp.status == 200
        body = await resp.json()
    by_id = {p["participant"]: p for p in body["participants"]}
    assert set(by_id) == {"alice", "bob"}
    row_keys = set(TimelineRow.model_fields)
    for row in by_id.values():
        assert row_keys | {"ts"} <= set(row)
    assert by_id["alice"]["engagement"] == 0.8 and by_id["alice"]["hand_raised"] is True
    assert by_id["bob"]["present"] is False
    assert by_id["alice"]["contributions"] == {"face_present": 0.3, "gaze": -0.1}
    assert body["aggregate"]["hand_queue"] == ["alice"]
    assert [a["participant"] for a in body["alerts"]] == ["bob"]


async def test_cleared_alert_leaves_the_live_state() -> None:
    async with gateway() as h:
        await h.emit(alert("s1", "bob"))
        await h.emit(alert("s1", "bob", state="cleared"))
        resp = await h.client.get("/api/sessions/s1/live", headers=auth("s1", "teacher"))
        assert (await resp.json())["alerts"] == []


async def test_history_routes_build_timeline_participants_and_report() -> None:
    async with gateway() as h:
        viewer = auth("s1", "viewer")
        # 10 scores = 2 s of media for alice (5 per second); hand raised during the second second only.
        for seq in range(10):
            await h.emit(score("s1", "alice", seq, hand=seq >= 5, speaking=seq < 5))
            await h.emit(score("s1", "t1", seq, role="teacher"))
        await h.emit(score("s1", "alice", 3))  # a redelivered duplicate must not count twice
        await h.emit(aggregate("s1", 0.0))
        await h.emit(aggregate("s1", 0.0))  # duplicate event id
        history = h.client.app[GATEWAY].history  # type: ignore[index]
        await until(lambda: (r := history.get("s1")) is not None and r.scores == 20 and len(r.aggregates) == 1)

        info = await (await h.client.get("/api/sessions/s1", headers=viewer)).json()
        assert info["scores"] == 20 and {p["id"] for p in info["participants"]} == {"alice", "t1"}
        parts = await (await h.client.get("/api/sessions/s1/participants", headers=viewer)).json()
        assert {p["id"]: p["role"] for p in parts["participants"]} == {"alice": "student", "t1": "teacher"}

        rows = (await (await h.client.get("/api/sessions/s1/timeline?participant=alice", headers=viewer)).json())[
            "rows"
        ]
        assert [(r["t"], r["speaking"], r["hand_raised"]) for r in rows] == [(0.0, True, False), (1.0, False, True)]
        late = (await (await h.client.get("/api/sessions/s1/timeline?since=1", headers=viewer)).json())["rows"]
        assert {r["t"] for r in late} == {1.0}
        bad = await h.client.get("/api/sessions/s1/timeline?since=soon", headers=viewer)
        assert bad.status == 400 and "since" in (await bad.json())["error"]

        report = Report.model_validate(await (await h.client.get("/api/sessions/s1/report", headers=viewer)).json())
        alice = report.summary.participants["alice"]
        assert alice.hand_raises == 1 and alice.talk_time_s == 1.0 and alice.present_ratio == 1.0
        assert report.summary.participants["t1"].role == "teacher"
        assert len(report.timeline) == 4

        aggs = await (await h.client.get("/api/sessions/s1/aggregates", headers=viewer)).json()
        assert len(aggs["aggregates"]) == 1
        listing = await (await h.client.get("/api/sessions", headers=viewer)).json()
        assert [s["id"] for s in listing["sessions"]] == ["s1"]

        missing = await h.client.get("/api/sessions/s2/report", headers=auth("s2", "viewer"))
        assert missing.status == 404 and "error" in await missing.json()


async def test_class_gauges_follow_aggregates() -> None:
    async with gateway() as h:
        await h.emit(aggregate("s9", 0.0))
        await h.emit(aggregate("s9", 1.0))
        reg = h.metrics.registry
        await until(lambda: reg.get_sample_value("classpulse_class_engagement", {"session": "s9"}) is not None)
        await until(
            lambda: reg.get_sample_value("classpulse_talk_seconds_total", {"session": "s9", "role": "student"}) == 1.2
        )
        assert reg.get_sample_value("classpulse_class_participants", {"session": "s9", "state": "present"}) == 2
        assert reg.get_sample_value("classpulse_talk_seconds_total", {"session": "s9", "role": "teacher"}) == 0.4
