"""Interaction events: chat, Q&A, poll answers, reactions, the hand-raise button, transcripts.

Topic ``classpulse.interactions`` (:data:`shared.contracts.topics.INTERACTIONS`), keyed by
session, at-least-once; consumers dedupe on ``event_id``.

=============================  ==========================================================
producer                       how
=============================  ==========================================================
services.gateway               ``POST /api/sessions/{s}/interactions`` (platforms, students)
classroom platforms            produce to the topic directly (docs/live-api.md)
the transcribe stage           ``source: speech``, kind ``chat``, the segment's ``start``/``end``
=============================  ==========================================================

Consumers: services.inference (text signals of the fusion model), services.gateway (history,
live rows, dashboard), the aggregation core (``shared.analytics``: per-participant counts).

The transcribe stage runs in services.inference (live) and ``classpulse replay``.

Privacy: ``text`` is personal data. The text stage (the gateway route, the transcribe stage) derives
``is_question`` and ``words`` and forwards ``text`` only with ``CLASSPULSE_KEEP_TEXT=true``;
consumers read the derived fields and never need the text. No consumer logs it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.events import Role
from shared.text.questions import text_features

InteractionKind = Literal["chat", "question", "answer", "poll_response", "reaction", "hand_raise_button"]
InteractionSource = Literal["platform", "join_page", "speech"]
WRITTEN_KINDS: frozenset[str] = frozenset({"chat", "question", "answer"})
"""Kinds that are messages (counted in ``chat_messages`` unless spoken)."""
MAX_TEXT_CHARS = 4000


class InteractionEvent(BaseModel):
    """A participant's interaction in a session (topic ``classpulse.interactions``).

    Producers: services.gateway (REST), platforms (Kafka), transcription. Consumers:
    services.inference, services.gateway, the aggregation core.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=300, description="Unique per event; consumers dedupe on it.")
    session: str = Field(min_length=1, max_length=200)
    participant: str = Field(min_length=1, max_length=200)
    role: Role = "student"
    kind: InteractionKind
    ts: float = Field(gt=0.0, description="When it happened (epoch s).")
    source: InteractionSource = "platform"
    text: str | None = Field(
        default=None,
        max_length=MAX_TEXT_CHARS,
        description="The message or transcript; personal data, forwarded only with CLASSPULSE_KEEP_TEXT=true.",
    )
    reply_to: str | None = Field(default=None, max_length=300, description="event_id this answers or replies to.")
    poll_id: str | None = Field(default=None, max_length=200, description="The poll (poll_response).")
    choice: str | None = Field(
        default=None, max_length=200, description="Poll choice (poll_response) or reaction name (reaction)."
    )
    start: float | None = Field(default=None, ge=0.0, description="Speech: segment start (s of media).")
    end: float | None = Field(default=None, ge=0.0, description="Speech: segment end (s of media).")
    is_question: bool | None = Field(
        default=None, description="Derived: the text asks something (kind 'question' always does)."
    )
    words: int | None = Field(default=None, ge=0, description="Derived: word count of the text.")
    relevance: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Derived: cosine similarity of the text's sentence embedding to the lesson (topic and the "
        "teacher's recent speech/chat); None when not judged (no lesson context yet, too short, relevance off).",
    )
    on_topic: bool | None = Field(
        default=None, description="Derived: relevance reached CLASSPULSE_TEXT_ON_TOPIC_MIN (None: not judged)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> InteractionEvent:
        if self.kind == "poll_response" and (self.poll_id is None or self.choice is None):
            raise ValueError("a poll_response needs poll_id and choice")
        if self.kind == "reaction" and self.choice is None:
            raise ValueError("a reaction needs choice (the reaction's name)")
        if self.source == "speech" and self.kind not in WRITTEN_KINDS:
            raise ValueError(f"a {self.kind} cannot come from speech")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end must not be before start")
        return self

    def derived(self, *, keep_text: bool) -> InteractionEvent:
        """The event as the text stage forwards it: ``is_question``/``words`` filled, text kept only if asked
        (relevance needs the lesson context: :class:`shared.text.stage.TextStage` fills it)."""
        update: dict[str, object] = {}
        if self.text is not None:
            features = text_features(self.text)
            update = {"is_question": features.is_question or self.kind == "question", "words": features.words}
        elif self.kind == "question":
            update = {"is_question": True}
        if not keep_text:
            update["text"] = None
        return self.model_copy(update=update)

    @property
    def asks(self) -> bool:
        """Counts as a question asked: kind 'question', or a message/transcript that is one
        (derived fields first; a producer that sent only text gets them derived here)."""
        if self.kind == "question":
            return True
        if self.kind not in WRITTEN_KINDS:
            return False
        if self.is_question is not None:
            return self.is_question
        return self.text is not None and text_features(self.text).is_question

    @property
    def word_count(self) -> int:
        """Words of the text (the derived field, else counted from the text, else 0)."""
        if self.words is not None:
            return self.words
        return text_features(self.text).words if self.text is not None else 0

    @property
    def responds(self) -> bool:
        """Counts as a response (to a teacher's question): a message, a transcript, a poll answer."""
        return self.kind in WRITTEN_KINDS or self.kind == "poll_response"

    @property
    def written(self) -> bool:
        """A written message (chat, question, answer) -- not speech, not a click."""
        return self.kind in WRITTEN_KINDS and self.source != "speech"


class InteractionCounts(BaseModel):
    """One participant's interaction totals so far in a session (live rows, live messages)."""

    model_config = ConfigDict(extra="forbid")

    questions: int = Field(default=0, ge=0, description="Questions asked (chat, Q&A or speech).")
    chat_messages: int = Field(default=0, ge=0, description="Written messages (chat, questions, answers).")
    words_spoken: int = Field(default=0, ge=0, description="Words of transcribed speech.")
    on_topic_ratio: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Share of judged messages/transcripts on topic (None: none judged)."
    )
