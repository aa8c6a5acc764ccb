"""The text stage: derived features of an interaction event, then the text is dropped.

Every producer of text runs one (the gateway for REST and Kafka-direct events, ``classpulse
replay --chat``, transcription): it derives ``is_question`` and ``words`` (rules,
:mod:`shared.text.questions`) and, with an encoder, ``relevance`` / ``on_topic`` -- the
message's cosine similarity to the **lesson context** of its session: the lesson topic (set
when the session starts, :meth:`TextStage.set_topic`) plus the teacher's messages and
transcripts of the last ``teacher_window_s`` seconds. A teacher's message joins the context
after it was judged itself. Messages shorter than ``min_words`` and messages without any
context are not judged (``None``). Behaviour only: relevance to the lesson, never sentiment.

Only vectors (no text) are kept in the context. The stage is thread safe (the gateway runs
batches in a worker thread).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.contracts.interactions import MAX_TEXT_CHARS, InteractionEvent
from shared.text.embeddings import SentenceEncoder, Vectors
from shared.text.questions import words as count_words
from shared.text.settings import TextSettings


@dataclass
class LessonContext:
    """One session's lesson: topic vectors and the teacher's recent message vectors (ts, vector)."""

    topic: Vectors | None = None
    teacher: deque[tuple[float, Vectors]] = field(default_factory=deque)

    def vectors(self, *, now: float, window_s: float) -> Vectors | None:
        rows = [v for ts, v in self.teacher if now - window_s <= ts <= now]
        if self.topic is not None:
            rows.append(self.topic)
        return np.concatenate(rows, axis=0) if rows else None


class TopicError(ValueError):
    """A lesson topic that cannot be used (empty, too long)."""


class TextStage:
    """Derives text features per event with a per-session lesson context (bounded)."""

    def __init__(self, *, settings: TextSettings, encoder: SentenceEncoder | None) -> None:
        self._settings = settings
        self._encoder = encoder
        self._contexts: OrderedDict[str, LessonContext] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def judges_relevance(self) -> bool:
        return self._encoder is not None

    def load(self) -> None:
        """Load the embedding model (explicit; a service calls it at start)."""
        if self._encoder is not None:
            self._encoder.load()

    def _context(self, session: str) -> LessonContext:
        ctx = self._contexts.get(session)
        if ctx is None:
            ctx = self._contexts[session] = LessonContext()
            while len(self._contexts) > self._settings.max_sessions:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(session)
        return ctx

    def set_topic(self, session: str, topic: str) -> None:
        """Set (replace) the lesson topic of ``session``: a sentence or a few keywords."""
        cleaned = topic.strip()
        if not cleaned:
            raise TopicError("the lesson topic is empty; give a sentence or a few keywords")
        if len(cleaned) > MAX_TEXT_CHARS:
            raise TopicError(f"the lesson topic is longer than {MAX_TEXT_CHARS} characters")
        if self._encoder is None:
            return
        vector = self._encoder.encode([cleaned])
        with self._lock:
            self._context(session).topic = vector

    def forget(self, session: str) -> bool:
        """Drop the session's lesson context (topic, teacher vectors): an erasure; whether there was one."""
        with self._lock:
            return self._contexts.pop(session, None) is not None

    def has_topic(self, session: str) -> bool:
        with self._lock:
            ctx = self._contexts.get(session)
            return ctx is not None and ctx.topic is not None

    def derive(self, events: Sequence[InteractionEvent], *, keep_text: bool) -> list[InteractionEvent]:
        """The events as they leave the text stage, in order (relevance judged against the context so far)."""
        judged = self._relevance(events)
        out = []
        for event, rel in zip(events, judged, strict=True):
            derived = event.derived(keep_text=keep_text)
            if rel is not None:
                derived = derived.model_copy(
                    update={"relevance": rel, "on_topic": rel >= self._settings.on_topic_min}
                )
            out.append(derived)
        return out

    def _relevance(self, events: Sequence[InteractionEvent]) -> list[float | None]:
        cfg = self._settings
        result: list[float | None] = [None] * len(events)
        if self._encoder is None:
            return result
        texts = [(i, e) for i, e in enumerate(events) if e.text is not None and e.text.strip()]
        if not texts:
            return result
        vectors = self._encoder.encode([e.text or "" for _, e in texts])
        with self._lock:
            for (i, event), vector in zip(texts, vectors, strict=True):
                ctx = self._context(event.session)
                if count_words(event.text or "") >= cfg.min_words:
                    lesson = ctx.vectors(now=event.ts, window_s=cfg.teacher_window_s)
                    if lesson is not None:
                        result[i] = float(np.clip(np.max(lesson @ vector), -1.0, 1.0))
                if event.role == "teacher":
                    ctx.teacher.append((event.ts, vector[None, :]))
                    while len(ctx.teacher) > cfg.teacher_max_messages:
                        ctx.teacher.popleft()
        return result


def build_text_stage(settings: TextSettings) -> TextStage:
    """The configured stage (its model is loaded by :meth:`TextStage.load`)."""
    encoder: SentenceEncoder | None = None
    if settings.relevance == "minilm":
        from shared.text.embeddings import MiniLMEncoder

        encoder = MiniLMEncoder(model_path=settings.model_path, device=settings.device)
    return TextStage(settings=settings, encoder=encoder)
