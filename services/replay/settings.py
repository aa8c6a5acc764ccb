"""Replay settings (environment variables ``CLASSPULSE_REPLAY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StrictSettings, register_settings


@register_settings
class ReplaySettings(StrictSettings):
    """Sampling and pipelining of ``classpulse replay`` (perception/fusion use CLASSPULSE_INFERENCE_*)."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_REPLAY_", extra="forbid", case_sensitive=False)

    analysis_fps: float = Field(default=5.0, gt=0.0, le=30.0, description="Video frames per second analysed.")
    frame_width: int = Field(
        default=640, ge=64, le=3840, description="Width of analysed frames in pixels (height keeps the aspect)."
    )
    audio_chunk_s: float = Field(default=0.5, ge=0.1, le=5.0, description="Length of one analysed audio chunk (s).")
    batch_max: int = Field(default=48, ge=1, le=1024, description="Messages handed to the inference engine at once.")
    batch_span_s: float = Field(
        default=3.0,
        gt=0.0,
        le=60.0,
        description="Media time one engine batch may span (results do not depend on it; longer = fewer fusion calls).",
    )
    queue_max: int = Field(
        default=64, ge=2, le=10_000, description="Decoded messages buffered between the decode thread and analysis."
    )
    mesh_trackers: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Face mesh in tracking mode for replay (replaces CLASSPULSE_INFERENCE_MESH_TRACKERS; a class "
        "replay raises it to one graph per recording): about half the mesh cost, a sudden head turn reads 3-4 "
        "frames (<1 s) late; 0 = static mode on every frame.",
    )
    perception_ahead: bool = Field(
        default=True,
        description="Run face detection/mesh in its own thread ahead of the engine (same results, both cores busy).",
    )
    audio_ahead: bool = Field(
        default=True,
        description="Compute VAD and log-mel in the decode thread, overlapping perception (same results).",
    )
