"""Interaction counting in the aggregation core: per participant, class by role, duplicates ignored."""

from __future__ import annotations

import pytest

from services.aggregator.scripted import Behaviour, Script, between
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.analytics.snapshot import dump, load
from shared.contracts.interactions import InteractionEvent

from .test_aggregator_core import BASE, run_all

pytestmark = pytest.mark.unit


def event(eid: str, participant: str, kind: str = "chat", **extra: object) -> InteractionEvent:
    return InteractionEvent.model_validate(
        {"event_id": eid, "session": "s1", "participant": participant, "kind": kind, "ts": BASE + 3, **extra}
    )


EVENTS = [
    event("e1", "a", text="what page are we on"),  # a question in chat
    event("e2", "a", text="thanks"),
    event("e3", "a", kind="question", text=None),  # Q&A, no text (platform kept it)
    event("e4", "b", kind="answer", is_question=False, words=3),  # derived fields only
    event("e5", "b", kind="reaction", choice="thumbs_up"),
    event("e6", "b", kind="poll_response", poll_id="p1", choice="B"),
    event("e7", "t", role="teacher", text="who can tell me why?"),
    event("e8", "a", source="speech", text="I think it is the second one", start=1.0, end=2.5),
    event("e9", "b", source="speech", text="why is it negative", start=3.0, end=4.0),
]


def test_counts_per_participant_and_class_with_repeats_ignored() -> None:
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    for e in EVENTS + EVENTS[:4]:  # at-least-once: a redelivered batch
        agg.add_interaction(e)
    assert agg.duplicate_interactions == 4
    a, b, t = (agg.interaction_counts(p) for p in ("a", "b", "t"))
    assert (a.questions, a.chat_messages, a.words_spoken) == (2, 3, 7)
    assert (b.questions, b.chat_messages, b.words_spoken) == (1, 1, 4)
    assert (t.questions, t.chat_messages) == (1, 1)
    assert agg.interaction_counts("nobody").questions == 0
    assert agg.questions_by_role == {"student": 3, "teacher": 1}


def test_summary_has_the_counts_and_chat_only_participants_stay_out_of_media_figures() -> None:
    script = Script(session="s1", base=BASE)
    script.add("a", between(0, 4, Behaviour(speaking=True)), end=10)
    plain = SessionAggregator(session="s1", config=AggregationConfig())
    run_all(plain, script)
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    for e in EVENTS:
        agg.add_interaction(e)
    run_all(agg, script)
    with_chat, without = agg.summary(), plain.summary()
    assert with_chat.participants["a"].questions == 2 and with_chat.participants["a"].words_spoken == 7
    assert with_chat.participants["b"].chat_messages == 1 and with_chat.participants["b"].talk_time_s == 0.0
    assert (with_chat.questions_students, with_chat.questions_teacher) == (3, 1)
    media_figures = {"engagement_mean", "attentive_ratio", "teacher_talk_share", "talk_equity_gini", "duration_s"}
    assert with_chat.model_dump(include=media_figures) == without.model_dump(include=media_figures)
    assert without.participants["a"].questions == 0 and set(without.participants) == {"a"}


def test_counts_and_seen_ids_survive_a_snapshot() -> None:
    config = AggregationConfig()
    agg = SessionAggregator(session="s1", config=config)
    for e in EVENTS[:5]:
        agg.add_interaction(e)
    restored = load(dump(agg), config=config)
    assert restored.interaction_counts("a") == agg.interaction_counts("a")
    assert not restored.add_interaction(EVENTS[0])
    assert restored.add_interaction(EVENTS[6])
    assert restored.questions_by_role == {"student": 2, "teacher": 1}
