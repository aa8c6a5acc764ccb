"""POST /api/sessions/{s}/interactions: scopes, bounds, all-or-nothing, privacy, counts in /live and the feed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared.contracts.codec import EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS

from .gateway_fixtures import Harness, gateway, score, token

pytestmark = pytest.mark.unit

URL = "/api/sessions/s1/interactions"


def chat(
    eid: str, participant: str = "alice", text: str | None = "what page are we on", **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"event_id": eid, "participant": participant, "kind": "chat", "ts": wall_clock()}
    if text is not None:
        item["text"] = text
    return {**item, **extra}


def bearer(role: str, participant: str = "*", session: str = "s1") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(session, role, participant)}"}  # type: ignore[arg-type]


async def published(h: Harness) -> list[InteractionEvent]:
    consumer = h.transports.events.consumer([INTERACTIONS.name], group=f"check-{wall_clock()}")
    await consumer.start()
    try:
        records = await consumer.poll(max_records=1000, timeout_ms=50)
    finally:
        await consumer.close()
    codec = EventCodec(InteractionEvent)
    return [codec.decode(r.value) for r in records]


async def test_student_posts_only_as_itself() -> None:
    async with gateway() as h:
        ok = await h.client.post(URL, json=[chat("e1")], headers=bearer("student", "alice"))
        assert ok.status == 202, await ok.text()
        assert (await ok.json()) == {"session": "s1", "accepted": 1, "event_ids": ["e1"]}
        other = await h.client.post(URL, json=[chat("e2"), chat("e3", "bob")], headers=bearer("student", "alice"))
        assert other.status == 403
        body = await other.json()
        assert body["items"] == ["item 1: a student token may post only as itself ('alice')"]
        assert "nothing was accepted" in body["error"]
        as_teacher = await h.client.post(URL, json=[chat("e4", role="teacher")], headers=bearer("student", "alice"))
        assert as_teacher.status == 403
        assert [e.event_id for e in await published(h)] == ["e1"]


@pytest.mark.parametrize("role", ["teacher", "platform"])
async def test_teacher_and_platform_post_for_anyone_in_the_session(role: str) -> None:
    async with gateway() as h:
        who = "t1" if role == "teacher" else "*"
        items = [chat("e1", "alice"), chat("e2", "bob"), chat("e3", "t1", role="teacher", kind="question")]
        resp = await h.client.post(URL, json=items, headers=bearer(role, who))
        assert resp.status == 202, await resp.text()
        got = [(e.participant, e.session) for e in await published(h)]
        assert got == [("alice", "s1"), ("bob", "s1"), ("t1", "s1")]
        elsewhere = await h.client.post(URL, json=[chat("e4")], headers=bearer(role, who, session="s2"))
        assert elsewhere.status == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer garbage"}, 401),
        ("viewer", 403),
    ],
)
async def test_wrong_tokens(headers: dict[str, str] | str, status: int) -> None:
    async with gateway() as h:
        hdrs = bearer("viewer") if headers == "viewer" else headers
        resp = await h.client.post(URL, json=[chat("e1")], headers=hdrs)  # type: ignore[arg-type]
        assert resp.status == status
        assert "error" in await resp.json()
        assert await published(h) == []


async def test_bounds_answer_413() -> None:
    async with gateway(interactions_max_items=3, interactions_max_bytes=2048) as h:
        auth = bearer("platform")
        many = await h.client.post(URL, json=[chat(f"e{i}") for i in range(4)], headers=auth)
        assert many.status == 413
        assert "at most 3" in (await many.json())["error"]
        big = await h.client.post(URL, json=[chat("e1", text="word " * 500)], headers=auth)
        assert big.status == 413
        assert "2048 bytes" in (await big.json())["error"]
        assert await published(h) == []
        fits = await h.client.post(URL, json=[chat(f"e{i}") for i in range(3)], headers=auth)
        assert fits.status == 202


async def test_invalid_batch_is_rejected_whole_with_one_line_per_bad_item() -> None:
    async with gateway() as h:
        items: list[Any] = [
            chat("e0"),
            chat("e1", kind="shout"),
            chat("e2"),
            {"event_id": "e3", "participant": "bob", "kind": "poll_response", "ts": wall_clock()},
            "hello",
            chat("e5", session="other"),
            chat("e6", ts="yesterday"),
        ]
        resp = await h.client.post(URL, json=items, headers=bearer("teacher", "t1"))
        assert resp.status == 400
        body = await resp.json()
        assert body["error"] == "5 of 7 interaction events are invalid; nothing was accepted"
        lines = body["items"]
        assert [line.split(":")[0] for line in lines] == ["item 1", "item 3", "item 4", "item 5", "item 6"]
        assert "kind" in lines[0] and "poll_id and choice" in lines[1] and "JSON object" in lines[2]
        assert "'other'" in lines[3] and "ts" in lines[4]
        assert all("\n" not in line for line in lines)
        assert await published(h) == []
        for body_text, why in (("{not json", "not JSON"), ('{"a": 1}', "JSON array")):
            bad = await h.client.post(URL, data=body_text, headers=bearer("teacher", "t1"))
            assert bad.status == 400 and why in (await bad.json())["error"]


@pytest.mark.parametrize("keep_text", [False, True])
async def test_text_is_forwarded_only_with_keep_text_and_features_always(keep_text: bool) -> None:
    async with gateway(keep_text=keep_text) as h:
        resp = await h.client.post(
            URL, json=[chat("e1", text="can you repeat that"), chat("e2", text="thanks")], headers=bearer("platform")
        )
        assert resp.status == 202
        first, second = await published(h)
        assert (first.is_question, first.words) == (True, 4)
        assert (second.is_question, second.words) == (False, 1)
        assert first.text == ("can you repeat that" if keep_text else None)


async def test_counts_reach_live_rows_and_the_feed_and_repeats_count_once() -> None:
    async with gateway() as h:
        await h.emit(score("s1", "alice", 1))
        auth = bearer("platform")
        async with h.client.ws_connect("/api/sessions/s1/ws", headers=bearer("viewer")) as ws:
            snapshot = json.loads((await ws.receive()).data)
            assert snapshot["state"]["participants"][0]["questions"] == 0
            batch = [chat("q1", text="why is it negative"), chat("c1", text="ok thanks"),
                     {**chat("q2", text=None), "kind": "question"}]
            assert (await h.client.post(URL, json=batch, headers=auth)).status == 202
            assert (await h.client.post(URL, json=batch[:1], headers=auth)).status == 202  # a retry
            got = []
            while len(got) < 3:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                if msg["kind"] == "interaction":
                    got.append(msg)
            assert got[-1]["counts"] == {"questions": 2, "chat_messages": 3, "words_spoken": 0, "on_topic_ratio": None}
            assert all(m["event"]["text"] is None for m in got)
        for _ in range(100):
            live = await (await h.client.get("/api/sessions/s1/live", headers=bearer("viewer"))).json()
            if live["participants"] and live["participants"][0]["questions"] == 2:
                break
            await asyncio.sleep(0.02)
        row = live["participants"][0]
        assert (row["questions"], row["chat_messages"], row["words_spoken"]) == (2, 3, 0)
        report = await (await h.client.get("/api/sessions/s1/report", headers=bearer("viewer"))).json()
        assert report["summary"]["participants"]["alice"]["questions"] == 2
        assert report["summary"]["questions_students"] == 2


async def test_openapi_documents_the_route_with_its_request_schema() -> None:
    async with gateway() as h:
        doc = await (await h.client.get("/api/openapi.json")).json()
        op = doc["paths"]["/api/sessions/{session}/interactions"]["post"]
        assert {"202", "400", "401", "403", "413"} <= set(op["responses"])
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]["type"] == "array"
