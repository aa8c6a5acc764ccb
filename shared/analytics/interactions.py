"""Interaction bookkeeping of one session: dedupe, questions, teacher questions and the responses to them.

Owned by :class:`shared.analytics.session.SessionAggregator` (one per session, snapshotted with
it). Interactions are counted on arrival (a platform may deliver chat late); the figures that
pair events -- a teacher's question and the first student response after it -- are computed
from the stored times when asked, so they do not depend on arrival order.

A **response** is a student's message, transcript or poll answer, or the start of a student's
speaking turn (voice activity): the first one within ``response_max_s`` after a teacher's
question, and before the teacher's next question, answers it; its delay is the question's
response latency. Only derived fields are read; a question's text is kept only when the event
carries it (``CLASSPULSE_KEEP_TEXT=true`` or a replay's own chat file).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from shared.analytics.state import Participant
from shared.contracts.events import Role
from shared.contracts.interactions import InteractionEvent
from shared.contracts.report import QuestionItem

INTERACTION_IDS = 5_000
"""Interaction event ids remembered per session for deduplication (the most recent ones)."""
QUESTIONS_KEPT = 1_000
"""Questions kept per session for the question list (the most recent ones)."""
RESPONSES_KEPT = 10_000
"""Student response times kept per session (the most recent ones)."""
REPLIED_KEPT = 5_000


@dataclass(slots=True)
class QuestionRecord:
    event_id: str
    participant: str
    role: Role
    ts: float
    kind: str
    source: str
    on_topic: bool | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Response:
    """The first student response to one teacher question."""

    question_ts: float
    latency_s: float
    participant: str


class InteractionBook:
    """Seen ids, questions asked, student response times, replies."""

    def __init__(self, *, response_max_s: float) -> None:
        self.response_max_s = response_max_s
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.by_role: dict[str, int] = {"student": 0, "teacher": 0}
        self.duplicates = 0
        self.questions: deque[QuestionRecord] = deque(maxlen=QUESTIONS_KEPT)
        self.responses: list[tuple[float, str]] = []
        """(ts epoch, participant) of student responses, sorted by time, bounded."""
        self.replied: OrderedDict[str, None] = OrderedDict()
        """Event ids someone replied to (``reply_to``)."""

    def add(self, event: InteractionEvent, p: Participant) -> bool:
        """Count ``event`` into ``p`` and the book; False for a repeated ``event_id``."""
        if event.event_id in self.ids:
            self.duplicates += 1
            return False
        self.ids[event.event_id] = None
        if len(self.ids) > INTERACTION_IDS:
            self.ids.popitem(last=False)
        if event.asks:
            p.questions += 1
            self.by_role[event.role] = self.by_role.get(event.role, 0) + 1
            self.questions.append(QuestionRecord(
                event_id=event.event_id, participant=event.participant, role=event.role, ts=event.ts,
                kind=event.kind, source=event.source, on_topic=event.on_topic, text=event.text))
        if event.written:
            p.chat_messages += 1
        if event.source == "speech":
            p.words_spoken += event.word_count
        if event.on_topic is not None:
            p.judged_messages += 1
            p.on_topic_messages += int(event.on_topic)
        if event.role == "student" and event.responds:
            self.add_response(event.ts, event.participant)
        if event.reply_to is not None:
            self.replied[event.reply_to] = None
            if len(self.replied) > REPLIED_KEPT:
                self.replied.popitem(last=False)
        return True

    def add_response(self, ts: float, participant: str) -> None:
        """A student responded (message, poll answer, or a speaking turn starting) at ``ts`` (epoch s)."""
        bisect.insort(self.responses, (ts, participant))
        if len(self.responses) > RESPONSES_KEPT:
            del self.responses[0]

    def first_responses(self) -> dict[str, Response]:
        """Teacher question event id -> its first student response (answered questions only)."""
        teacher = sorted((q for q in self.questions if q.role == "teacher"), key=lambda q: q.ts)
        out: dict[str, Response] = {}
        if not teacher or not self.responses:
            return out
        for i, q in enumerate(teacher):
            until = q.ts + self.response_max_s
            if i + 1 < len(teacher):
                until = min(until, teacher[i + 1].ts)
            k = bisect.bisect_left(self.responses, (q.ts, ""))
            if k < len(self.responses) and self.responses[k][0] <= until:
                ts, who = self.responses[k]
                out[q.event_id] = Response(question_ts=q.ts, latency_s=max(0.0, ts - q.ts), participant=who)
        return out

    def question_items(self, origin: float) -> list[QuestionItem]:
        """The question list of a report (session times, oldest first)."""
        answered = self.first_responses()
        items = []
        for q in sorted(self.questions, key=lambda q: (q.ts, q.event_id)):
            first = answered.get(q.event_id)
            items.append(QuestionItem(
                event_id=q.event_id, t=round(max(0.0, q.ts - origin), 3), participant=q.participant, role=q.role,
                kind=q.kind, source=q.source, on_topic=q.on_topic, text=q.text,
                answered=first is not None or q.event_id in self.replied,
                response_s=round(first.latency_s, 3) if first is not None else None,
                responder=first.participant if first is not None else None))
        return items

    # ------------------------------------------------------------------ snapshot
    def dump(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids), "by_role": self.by_role, "dup": self.duplicates,
            "questions": [[q.event_id, q.participant, q.role, q.ts, q.kind, q.source, q.on_topic, q.text]
                          for q in self.questions],
            "responses": self.responses, "replied": list(self.replied),
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.ids = OrderedDict.fromkeys(str(i) for i in data.get("ids", []))
        self.by_role = {str(k): int(v) for k, v in data.get("by_role", {}).items()} or {"student": 0, "teacher": 0}
        self.duplicates = int(data.get("dup", 0))
        self.questions = deque((QuestionRecord(*q) for q in data.get("questions", [])), maxlen=QUESTIONS_KEPT)
        self.responses = [(float(t), str(p)) for t, p in data.get("responses", [])]
        self.replied = OrderedDict.fromkeys(str(i) for i in data.get("replied", []))
