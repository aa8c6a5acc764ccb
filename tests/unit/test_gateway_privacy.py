"""Gateway privacy routes on memory transports: opt-out, aggregate-only, erasure, and what every view shows."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.context import GATEWAY
from shared.contracts.privacy import ErasureReport, PrivacyEvent, SessionPrivacy
from shared.contracts.topics import PRIVACY, state_key
from shared.transport.memory import MemoryEventBus, MemoryLiveBus

from .gateway_fixtures import aggregate, alert, auth, gateway, score, token
from .test_gateway_api import until

pytestmark = pytest.mark.unit

OPT = "/api/sessions/s1/participants/{p}/opt-out"


def bearer(session: str, role: str, participant: str = "*") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(session, role, participant)}"}  # type: ignore[arg-type]


async def test_who_may_opt_whom_out_and_back_in() -> None:
    async with gateway() as h:
        c = h.client
        assert (await c.put(OPT.format(p="bob"), headers=bearer("s1", "student", "alice"))).status == 403
        assert (await c.put(OPT.format(p="bob"), headers=bearer("s1", "viewer"))).status == 403
        assert (await c.put(OPT.format(p="bob"), headers=bearer("s2", "teacher"))).status == 403
        assert (await c.put(OPT.format(p="bob"))).status == 401
        r = await c.put(OPT.format(p="bob"), headers=bearer("s1", "student", "bob"))
        assert r.status == 200 and (await r.json())["opted_out"] is True
        r = await c.put(OPT.format(p="carol"), headers=bearer("s1", "teacher"))
        assert r.status == 200
        denied = await c.delete(OPT.format(p="bob"), headers=bearer("s1", "teacher"))
        assert denied.status == 403 and "student itself" in (await denied.json())["error"]
        mine = await c.get("/api/sessions/s1/privacy", headers=bearer("s1", "student", "bob"))
        assert (await mine.json())["opted_out"] == ["bob"]  # a student sees only its own opt-out
        everyone = await c.get("/api/sessions/s1/privacy", headers=bearer("s1", "teacher"))
        assert (await everyone.json())["opted_out"] == ["bob", "carol"]
        back = await c.delete(OPT.format(p="bob"), headers=bearer("s1", "student", "bob"))
        assert back.status == 200 and (await back.json())["opted_out"] is False
        assert (await c.delete(OPT.format(p="carol"), headers=bearer("s1", "platform"))).status == 200
        events = h.transports.events
        assert isinstance(events, MemoryEventBus)
        kinds = [PrivacyEvent.model_validate_json(v).kind for _, v in events.records(PRIVACY.name)]
        assert kinds == ["opted_out", "opted_out", "opted_in", "opted_in"]


async def test_opted_out_participant_is_shown_only_as_opted_out() -> None:
    async with gateway() as h:
        c = h.client
        for seq in range(1, 6):
            await h.emit(score("s1", "alice", seq))
            await h.emit(score("s1", "bob", seq, hand=True))
        await h.emit(alert("s1", "bob"))
        ws = await c.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "teacher")})
        await ws.receive_json(timeout=3)
        history = c.app[GATEWAY].history
        await until(lambda: (r := history.get("s1")) is not None and r.scores == 10)
        r = await c.put(OPT.format(p="bob"), headers=bearer("s1", "student", "bob"))
        erased = {i["what"]: i["count"] for i in (await r.json())["erased"]}
        assert erased["live state of the participant"] >= 2  # bob's latest score and alert left the live state
        notice = await ws.receive_json(timeout=3)
        assert notice["kind"] == "privacy" and notice["event"]["participant"] == "bob"
        await h.emit(score("s1", "bob", 6))  # media in flight before the opt-out: never shown
        await h.emit(score("s1", "alice", 6))
        await h.emit(aggregate("s1", 0.0, hand_queue=["bob", "alice"]))
        got = [await ws.receive_json(timeout=3) for _ in range(2)]
        await ws.close()
        assert [m["kind"] for m in got] == ["score", "aggregate"] and got[0]["event"]["participant"] == "alice"
        assert got[1]["event"]["hand_queue"] == ["alice"]
        live = await (await c.get("/api/sessions/s1/live", headers=auth("s1", "viewer"))).json()
        assert [p["participant"] for p in live["participants"]] == ["alice"] and live["opted_out"] == ["bob"]
        assert all(a["participant"] != "bob" for a in live["alerts"])
        parts = await (await c.get("/api/sessions/s1/participants", headers=auth("s1", "viewer"))).json()
        bob = next(p for p in parts["participants"] if p["id"] == "bob")
        assert bob["status"] == "opted_out" and bob["media_time"] == 0.0
        rows = (await (await c.get("/api/sessions/s1/timeline", headers=auth("s1", "viewer"))).json())["rows"]
        assert rows and {row["participant"] for row in rows} == {"alice"}
        report = await (await c.get("/api/sessions/s1/report", headers=auth("s1", "teacher"))).json()
        assert [p["id"] for p in report["participants"]] == ["alice"] and report["privacy"]["opted_out"] == ["bob"]
        assert "bob" not in report["summary"]["participants"]
        assert all(a["participant"] != "bob" for a in
                   (await (await c.get("/api/sessions/s1/alerts", headers=auth("s1", "viewer"))).json())["alerts"])
        posted = await c.post("/api/sessions/s1/interactions", headers=bearer("s1", "platform"), json=[
            {"event_id": "c1", "participant": "bob", "kind": "chat", "text": "hi", "ts": 1.0},
            {"event_id": "c2", "participant": "alice", "kind": "chat", "text": "hi", "ts": 1.0}])
        assert (await posted.json()) == {"session": "s1", "accepted": 1, "event_ids": ["c2"], "opted_out": 1}


async def test_aggregate_only_session_shows_class_figures_only() -> None:
    async with gateway() as h:
        c = h.client
        await h.emit(score("s1", "alice", 1))
        bad = await c.put("/api/sessions/s1/privacy", headers=bearer("s1", "teacher"), data=b"{nope")
        assert bad.status == 400 and "aggregate_only" in (await bad.json())["error"]
        denied = await c.put("/api/sessions/s1/privacy", headers=bearer("s1", "student", "alice"),
                             json={"aggregate_only": True})
        assert denied.status == 403
        r = await c.put("/api/sessions/s1/privacy", headers=bearer("s1", "teacher"), json={"aggregate_only": True})
        assert r.status == 200 and (await r.json())["aggregate_only"] is True
        ws = await c.ws_connect("/api/sessions/s1/ws", params={"token": token("s1", "viewer")})
        snap = (await ws.receive_json(timeout=3))["state"]
        assert snap["aggregate_only"] and snap["participants"] == [] and snap["lifecycle"] == []
        await h.emit(score("s1", "alice", 2))
        await h.emit(alert("s1", "alice"))
        await h.emit(aggregate("s1", 0.0, hand_queue=["alice"]))
        got = await ws.receive_json(timeout=3)
        await ws.close()
        assert got["kind"] == "aggregate" and got["event"]["participants"] == {} and got["event"]["hand_queue"] == []
        assert got["event"]["participants_total"] == 2
        live = await (await c.get("/api/sessions/s1/live", headers=auth("s1", "viewer"))).json()
        assert live["participants"] == [] and live["alerts"] == [] and live["aggregate"]["participants"] == {}
        await until(lambda: (r := c.app[GATEWAY].history.get("s1")) is not None and len(r.aggregates) == 1)
        page = await (await c.get("/api/sessions/s1/aggregates", headers=auth("s1", "viewer"))).json()
        assert page["aggregates"][0]["participants"] == {}
        timeline = await c.get("/api/sessions/s1/timeline", headers=auth("s1", "viewer"))
        assert timeline.status == 403 and "aggregate-only" in (await timeline.json())["error"]
        info = await (await c.get("/api/sessions/s1", headers=auth("s1", "viewer"))).json()
        assert info["participants"] == [] and info["aggregate_only"] is True
        report = await (await c.get("/api/sessions/s1/report", headers=auth("s1", "teacher"))).json()
        assert report["participants"] == [] and report["timeline"] == [] and report["summary"]["participants"] == {}


async def test_deployment_wide_aggregate_only_cannot_be_switched_off() -> None:
    async with gateway() as h:
        h.client.app[GATEWAY].privacy.aggregate_only = True
        r = await h.client.put("/api/sessions/s1/privacy", headers=bearer("s1", "platform"),
                               json={"aggregate_only": False})
        assert r.status == 409 and "CLASSPULSE_AGGREGATE_ONLY" in (await r.json())["error"]
        policy = await (await h.client.get("/api/sessions/s1/privacy", headers=auth("s1", "viewer"))).json()
        assert policy["aggregate_only"] is True


async def test_delete_session_erases_and_says_what_it_could_not() -> None:
    async with gateway() as h:
        c = h.client
        for seq in range(1, 4):
            await h.emit(score("s1", "alice", seq))
        await h.client.put(OPT.format(p="bob"), headers=bearer("s1", "student", "bob"))
        await until(lambda: (r := c.app[GATEWAY].history.get("s1")) is not None and r.scores == 3)
        for role in ("viewer", "student"):
            assert (await c.delete("/api/sessions/s1", headers=bearer("s1", role, "alice"))).status == 403
        assert (await c.delete("/api/sessions/s1", headers=bearer("s2", "teacher"))).status == 403
        r = await c.delete("/api/sessions/s1", headers=bearer("s1", "teacher"))
        assert r.status == 200
        report = ErasureReport.model_validate(await r.json())
        assert {i.store for i in report.erased} == {"memory", "gateway"}
        assert any(i.store == "memory" and "event log" in i.what for i in report.not_erased)
        assert {i.store for i in report.requested} == {"aggregator", "gateway"}
        live = h.transports.live
        assert isinstance(live, MemoryLiveBus) and await live.get_state(state_key("s1")) == {}
        assert (await c.get("/api/sessions/s1", headers=auth("s1", "viewer"))).status == 404
        await asyncio.sleep(0.3)  # the history reader sees the erased event and the old scores again: still gone
        assert c.app[GATEWAY].history.get("s1") is None
        policy = SessionPrivacy.model_validate(
            await (await c.get("/api/sessions/s1/privacy", headers=auth("s1", "teacher"))).json())
        assert policy.erased_at == report.erased_at and policy.opted_out == ["bob"]  # consent outlives erasure
        await h.emit(score("s1", "alice", 50))  # old (captured before the erasure) when read again: ignored
        await asyncio.sleep(0.2)
        assert c.app[GATEWAY].history.get("s1") is None


def test_history_forgets_sessions_idle_past_the_retention() -> None:
    from prometheus_client import CollectorRegistry

    from services.gateway.history import SessionHistory
    from shared.contracts.timing import wall_clock
    from shared.metrics import Metrics

    history = SessionHistory(metrics=Metrics(CollectorRegistry()), max_sessions=10, max_rows=100, max_aggregates=10,
                             retention_s=60)
    history.apply(score("s1", "alice", 1))
    assert history.sweep(wall_clock() + 30) == 0 and history.get("s1") is not None
    history._next_sweep = 0.0  # the sweep runs at most every retention/10 (bounded by 60 s)
    assert history.sweep(wall_clock() + 61) == 1 and history.get("s1") is None


async def test_bad_privacy_requests_get_one_readable_line() -> None:
    async with gateway() as h:
        c = h.client
        deep = b"[" * 2000 + b"]" * 2000
        for body in (deep[:1000], b"[1, 2]", b'{"aggregate_only": "maybe"}', b""):
            r = await c.put("/api/sessions/s1/privacy", headers=bearer("s1", "teacher"), data=body)
            assert r.status == 400, body
        long_id = "x" * 129
        r = await c.put(OPT.format(p=long_id), headers=bearer("s1", "teacher"))
        assert r.status == 400 and "128" in (await r.json())["error"]
        r = await c.delete("/api/sessions/s1", headers={"Authorization": "Bearer nope"})
        assert r.status == 401 and "error" in await r.json()
