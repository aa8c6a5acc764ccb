"""A student's own view: its signals, summary and explanation — never another student's."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.context import GATEWAY

from .gateway_fixtures import gateway, score, token

pytestmark = pytest.mark.unit


def bearer(session: str, role: str, participant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(session, role, participant)}"}  # type: ignore[arg-type]


async def test_student_sees_own_signals_summary_and_explanation_and_nobody_elses() -> None:
    async with gateway() as h:
        for seq in range(1, 16):
            await h.emit(score("s1", "alice", seq, hand=seq == 3, speaking=seq > 10))
            await h.emit(score("s1", "bob", seq, present=False, engagement=0.1))
        for _ in range(300):
            record = h.client.app[GATEWAY].history.get("s1")
            if record is not None and record.scores >= 30:
                break
            await asyncio.sleep(0.01)
        resp = await h.client.get("/api/sessions/s1/participants/alice/me", headers=bearer("s1", "student", "alice"))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        raw = await resp.text()
    assert body["participant"] == "alice" and "bob" not in raw
    assert body["now"]["participant"] == "alice" and body["now"]["present"] is True
    assert body["now"]["contributions"] == {"face_present": 0.3, "gaze": -0.1}
    assert {r["participant"] for r in body["timeline"]} == {"alice"} and len(body["timeline"]) >= 2
    assert body["summary"]["hand_raises"] == 1 and body["summary"]["present_ratio"] > 0.9
    assert "never stores your camera" in body["recorded"]


async def test_a_student_token_cannot_open_another_students_view() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "bob", 1))
        resp = await h.client.get("/api/sessions/s1/participants/bob/me", headers=bearer("s1", "student", "alice"))
        assert resp.status == 403
        assert "only its own view" in (await resp.json())["error"]
        other_session = await h.client.get(
            "/api/sessions/s1/participants/bob/me", headers=bearer("s2", "student", "bob")
        )
        assert other_session.status == 403
        missing = await h.client.get("/api/sessions/s1/participants/bob/me")
        assert missing.status == 401


async def test_teacher_may_open_any_view_and_unknown_participant_is_404() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "bob", 1))
        for _ in range(300):
            if h.client.app[GATEWAY].history.get("s1") is not None:
                break
            await asyncio.sleep(0.01)
        ok = await h.client.get("/api/sessions/s1/participants/bob/me", headers=bearer("s1", "teacher", "t1"))
        assert ok.status == 200
        nobody = await h.client.get("/api/sessions/s1/participants/carol/me", headers=bearer("s1", "student", "carol"))
        assert nobody.status == 404 and "join the class first" in (await nobody.json())["error"]


async def test_me_page_is_served_with_the_signal_registry() -> None:
    async with gateway() as h:
        page = await h.client.get("/me")
        text = await page.text()
        assert page.status == 200 and "SIGNAL_REGISTRY" not in text and '"outputs"' in text
        script = await h.client.get("/static/gateway/me.js")
        assert script.status == 200


async def test_after_opting_out_the_own_view_holds_nothing_but_the_choice() -> None:
    async with gateway() as h:
        for seq in range(1, 6):
            await h.emit(score("s1", "alice", seq))
        for _ in range(300):
            record = h.client.app[GATEWAY].history.get("s1")
            if record is not None and record.scores >= 5:
                break
            await asyncio.sleep(0.01)
        url = "/api/sessions/s1/participants/alice"
        out = await h.client.put(f"{url}/opt-out", headers=bearer("s1", "student", "alice"))
        assert out.status == 200, await out.text()
        view = await (await h.client.get(f"{url}/me", headers=bearer("s1", "student", "alice"))).json()
        assert view["opted_out"] is True
        assert view["now"] is None and view["summary"] is None and view["timeline"] == []
        back = await h.client.delete(f"{url}/opt-out", headers=bearer("s1", "student", "alice"))
        assert back.status == 200
        view = await (await h.client.get(f"{url}/me", headers=bearer("s1", "student", "alice"))).json()
        assert view["opted_out"] is False
