"""Text figures of the aggregation core: teacher question -> first student response, on-topic ratio,
participation equity over voice + chat, the question list and the per-window interaction figures."""

from __future__ import annotations

import pytest

from services.aggregator.scripted import Behaviour, Script, between, constant
from shared.analytics.config import AggregationConfig
from shared.analytics.equity import participation
from shared.analytics.session import SessionAggregator
from shared.analytics.snapshot import dump, load
from shared.contracts.interactions import InteractionEvent

from .test_aggregator_core import BASE, run_all

pytestmark = pytest.mark.unit


def ev(eid: str, who: str, t: float, kind: str = "chat", **extra: object) -> InteractionEvent:
    role = "teacher" if who == "t" else "student"
    return InteractionEvent.model_validate(
        {"event_id": eid, "session": "s1", "participant": who, "role": role, "kind": kind, "ts": BASE + t, **extra}
    )


def _class(events: list[InteractionEvent], *, speak: tuple[float, float] | None = None) -> SessionAggregator:
    script = Script(session="s1", base=BASE)
    script.add("t", constant(present=True), role="teacher", end=40)
    script.add("a", between(*speak, Behaviour(speaking=True, present=True)) if speak else constant(present=True),
               end=40)
    script.add("b", constant(present=True), end=40)
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    for e in events:
        agg.add_interaction(e)
    run_all(agg, script)
    return agg


def test_first_student_response_after_a_teacher_question_in_any_arrival_order() -> None:
    events = [
        ev("q1", "t", 5.0, text="who can tell me what a denominator is?", is_question=True),
        ev("r0", "b", 4.0, text="hi"),  # before the question: no response to it
        ev("r1", "b", 8.5, kind="answer", text="the bottom number", on_topic=True, relevance=0.6),
        ev("r2", "a", 9.0, text="yes the bottom", on_topic=True, relevance=0.5),
        ev("q2", "t", 20.0, text="any questions", is_question=True),  # nobody responds in chat ...
        ev("q3", "t", 30.0, kind="question"),
        ev("p1", "a", 33.0, kind="poll_response", poll_id="p", choice="B"),  # a poll answer responds
    ]
    forward, backward = _class(events), _class(list(reversed(events)))
    for agg in (forward, backward):
        s = agg.summary()
        assert (s.questions_teacher, s.teacher_questions_answered) == (3, 2)
        assert s.response_latency_s == pytest.approx(3.25)  # median of 3.5 (b) and 3.0 (a's poll)
        items = {q.event_id: q for q in agg.questions()}
        assert items["q1"].response_s == pytest.approx(3.5) and items["q1"].responder == "b"
        assert not items["q2"].answered and items["q2"].response_s is None
        assert items["q3"].responder == "a" and items["q1"].t == pytest.approx(5.0)
        assert [q.event_id for q in agg.questions()] == ["q1", "q2", "q3"]


def test_a_student_speaking_turn_answers_a_teacher_question() -> None:
    agg = _class([ev("q1", "t", 20.0, text="what do you think, Anna?", is_question=True)], speak=(22.0, 25.0))
    s = agg.summary()
    assert s.teacher_questions_answered == 1 and s.response_latency_s == pytest.approx(2.0)
    assert agg.questions()[0].responder == "a"


def test_a_response_later_than_the_window_or_after_the_next_question_does_not_count() -> None:
    config = AggregationConfig()
    agg = SessionAggregator(session="s1", config=config, origin=BASE)
    agg.add_interaction(ev("q1", "t", 0.0, kind="question"))
    agg.add_interaction(ev("late", "a", config.response_max_s + 1.0, text="sorry I was away"))
    agg.add_interaction(ev("q2", "t", 200.0, kind="question"))
    agg.add_interaction(ev("q3", "t", 201.0, kind="question"))
    agg.add_interaction(ev("r", "a", 202.0, text="it is 4"))
    answered = {q.event_id: q.answered for q in agg.questions()}
    assert answered == {"q1": False, "q2": False, "q3": True}


def test_on_topic_ratio_counts_only_judged_messages() -> None:
    agg = _class([
        ev("1", "a", 1.0, text="how do I add 1/2 and 1/3", on_topic=True, relevance=0.61),
        ev("2", "a", 2.0, text="anyone play minecraft tonight", on_topic=False, relevance=0.05),
        ev("3", "a", 3.0, text="ok"),  # too short: not judged
        ev("4", "a", 4.0, text="so the bottom stays the same", on_topic=True, relevance=0.4),
    ])
    parts = agg.summary().participants
    assert parts["a"].on_topic_ratio == pytest.approx(2 / 3)
    assert parts["b"].on_topic_ratio is None  # wrote nothing


def test_participation_equity_over_voice_and_chat() -> None:
    # a talks, b only writes: over voice alone b is absent, over voice + chat both take part
    assert participation({"a": 10.0, "b": 0.0}, {"a": 0.0, "b": 4.0}) == {"a": 0.5, "b": 0.5}
    assert participation({"a": 10.0, "b": 0.0}, {}) == {"a": 1.0, "b": 0.0}
    assert participation({}, {}) == {}
    voice_only = _class([], speak=(2.0, 12.0)).summary()
    both = _class([ev(f"m{i}", "b", 3.0 + i, text="the bottom number") for i in range(4)],
                  speak=(2.0, 12.0)).summary()
    assert voice_only.participation_equity_gini == pytest.approx(0.5)  # a all, b nothing
    assert both.participation_equity_gini == pytest.approx(0.0)  # a all the talk, b all the chat
    assert both.talk_equity_gini == voice_only.talk_equity_gini


def test_windows_carry_the_interactions_of_their_time() -> None:
    events = [ev("q1", "t", 5.2, kind="question"), ev("m1", "a", 5.7, text="is it 4?"),
              ev("m2", "b", 12.0, text="thanks")]
    script = Script(session="s1", base=BASE)
    script.add("t", constant(present=True), role="teacher", end=20)
    script.add("a", constant(present=True), end=20)
    script.add("b", constant(present=True), end=20)
    agg = SessionAggregator(session="s1", config=AggregationConfig())
    for e in events:
        agg.add_interaction(e)
    aggregates, _ = run_all(agg, script)
    tens = {a.window.start: a for a in aggregates if a.window.kind == "tumbling" and a.window.size_s == 10}
    assert (tens[0.0].questions_teacher, tens[0.0].questions_students, tens[0.0].chat_messages) == (1, 1, 2)
    assert (tens[10.0].questions_students, tens[10.0].chat_messages) == (0, 1)
    assert tens[0.0].response_latency_s == pytest.approx(0.5) and tens[10.0].response_latency_s == pytest.approx(0.5)
    ones = {a.window.start: a for a in aggregates if a.window.kind == "tumbling" and a.window.size_s == 1}
    assert ones[5.0].chat_messages == 2 and ones[4.0].chat_messages == 0
    assert sum(a.chat_messages for a in ones.values()) == 3  # a Q&A question is a written message too


def test_the_book_survives_a_snapshot() -> None:
    config = AggregationConfig()
    agg = SessionAggregator(session="s1", config=config, origin=BASE)
    agg.add_interaction(ev("q1", "t", 1.0, kind="question", text="why?"))
    agg.add_interaction(ev("r1", "a", 2.5, text="because", on_topic=True, relevance=0.5))
    restored = load(dump(agg), config=config)
    assert restored.questions() == agg.questions()
    assert restored.questions()[0].response_s == pytest.approx(1.5)
    assert not restored.add_interaction(ev("r1", "a", 2.5, text="because"))
    assert restored.summary().participants["a"].on_topic_ratio == 1.0
