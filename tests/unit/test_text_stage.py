"""The text stage: on-topic relevance against the lesson context (a fake encoder with known vectors), the
topic route's scopes, and privacy: text leaves the stage only with keep_text, Kafka-direct text is
stripped by the gateway, and no message text reaches the logs (DEBUG, REST and Kafka paths)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from shared.contracts.interactions import InteractionEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS
from shared.text.embeddings import Vectors
from shared.text.settings import TextSettings
from shared.text.stage import TextStage, TopicError
from shared.transport.typed import EventPublisher

from .gateway_fixtures import auth, gateway, score

pytestmark = pytest.mark.unit

AXES = {"fraction": 0, "denominator": 0, "cat": 1, "game": 1, "plant": 2, "sunlight": 2}


class KeywordEncoder:
    """Unit vectors over three topics by keyword (fractions, pets/games, plants); counts its calls."""

    def __init__(self) -> None:
        self.loaded = False
        self.calls = 0

    def load(self) -> None:
        self.loaded = True

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            for word, axis in AXES.items():
                if word in text.lower():
                    out[i, axis] += 1.0
            out[i, 3] += 0.2  # a little shared background
            out[i] /= np.linalg.norm(out[i])
        return out


def stage(**settings: object) -> TextStage:
    return TextStage(settings=TextSettings(**settings), encoder=KeywordEncoder())  # type: ignore[arg-type]


def ev(eid: str, who: str, text: str, t: float = 0.0, session: str = "s1") -> InteractionEvent:
    return InteractionEvent(event_id=eid, session=session, participant=who, role="teacher" if who == "t" else "student",
                            kind="chat", ts=1_767_000_000.0 + t, text=text)


def test_relevance_against_the_topic_and_the_teachers_recent_messages() -> None:
    s = stage(teacher_window_s=60.0)
    out = s.derive([ev("1", "a", "the cat sat on my fraction homework")], keep_text=False)
    assert out[0].relevance is None  # no lesson context yet: not judged
    s.set_topic("s1", "fractions and the common denominator")
    out = s.derive([
        ev("2", "a", "how do I get the denominator", 1),
        ev("3", "b", "anyone up for a game later", 2),
        ev("4", "a", "ok", 3),  # shorter than min_words: not judged
        ev("5", "t", "plants need sunlight to grow", 4),  # the teacher moves on: joins the context
        ev("6", "b", "so the plant eats sunlight then", 5),
        ev("7", "b", "does the plant need sunlight at night", 100),  # the teacher's message is too old now
    ], keep_text=False)
    by = {e.event_id: e for e in out}
    assert by["2"].on_topic is True and by["3"].on_topic is False and by["4"].on_topic is None
    assert by["6"].on_topic is True and by["7"].on_topic is False
    assert all(e.text is None for e in out) and by["2"].words == 6 and by["2"].is_question
    other = s.derive([ev("8", "a", "how do I get the denominator", 1, session="s2")], keep_text=True)
    assert other[0].relevance is None and other[0].text == "how do I get the denominator"  # per session


def test_topics_are_checked_and_contexts_are_bounded() -> None:
    s = stage(max_sessions=2)
    with pytest.raises(TopicError):
        s.set_topic("s1", "   ")
    for session in ("s1", "s2", "s3"):
        s.set_topic(session, "fractions")
    assert not s.has_topic("s1") and s.has_topic("s3")
    rules_only = TextStage(settings=TextSettings(relevance="off"), encoder=None)
    rules_only.set_topic("s1", "fractions")
    assert rules_only.derive([ev("1", "a", "what is a fraction")], keep_text=False)[0].on_topic is None


async def test_topic_route_scopes_and_relevance_over_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(text_stage=stage()) as h:
        url = "/api/sessions/s1/topic"
        for role, status in (("student", 403), ("viewer", 403)):
            assert (await h.client.put(url, json={"topic": "fractions"}, headers=auth("s1", role))).status == status
        bad = await h.client.put(url, data=b'{"topic": ""}', headers=auth("s1", "teacher"))
        assert bad.status == 400 and "non-empty topic" in (await bad.json())["error"]
        teacher = auth("s1", "teacher")
        ok = await h.client.put(url, json={"topic": "fractions with unlike denominators"}, headers=teacher)
        assert ok.status == 200 and (await ok.json()) == {"session": "s1", "relevance": True}
        await h.emit(score("s1", "alice", 1))
        batch = [{"event_id": "c1", "participant": "alice", "kind": "chat", "ts": wall_clock(),
                  "text": "which denominator do we use"},
                 {"event_id": "c2", "participant": "alice", "kind": "chat", "ts": wall_clock(),
                  "text": "my cat is on the keyboard"}]
        posted = await h.client.post("/api/sessions/s1/interactions", json=batch, headers=auth("s1", "platform"))
        assert posted.status == 202
        for _ in range(100):
            live = await (await h.client.get("/api/sessions/s1/live", headers=auth("s1", "viewer"))).json()
            rows = [p for p in live["participants"] if p["participant"] == "alice"]
            if rows and rows[0]["chat_messages"] == 2:
                break
            await asyncio.sleep(0.05)
        assert rows[0]["on_topic_ratio"] == 0.5 and rows[0]["questions"] == 1
        assert live["questions"][0]["event_id"] == "c1" and live["questions"][0]["text"] is None
    logged = caplog.text
    assert "denominator" not in logged and "keyboard" not in logged and "fractions" not in logged


async def test_kafka_direct_text_is_derived_and_dropped_by_the_gateway(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(text_stage=stage()) as h:
        async with h.client.ws_connect("/api/sessions/s1/ws", headers=auth("s1", "viewer")) as ws:
            await ws.receive()  # snapshot
            direct = InteractionEvent(event_id="lms-1", session="s1", participant="bob", kind="chat",
                                      ts=wall_clock(), text="is the cat allowed in class")  # no derived fields
            await EventPublisher(bus=h.transports.events, topic=INTERACTIONS).publish(direct)
            msg = (await asyncio.wait_for(ws.receive(), 5)).json()
        assert msg["kind"] == "interaction"
        assert msg["event"]["text"] is None and msg["event"]["is_question"] is True and msg["event"]["words"] == 6
        report = await (await h.client.get("/api/sessions/s1/report", headers=auth("s1", "viewer"))).json()
        assert report["questions"][0]["event_id"] == "lms-1" and report["questions"][0]["text"] is None
    assert "cat allowed" not in caplog.text
