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
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        le=1024,
        description="glibc malloc arenas the replay process may use (0 = glibc's default, 8 per core); with its "
        "threads each in their own arena a replay's peak memory was ~30 MiB higher.",
    )
    perception_ahead: bool = Field(
        default=True,
        description="Run face detection/mesh in its own thread ahead of the engine (same results, both cores busy).",
    )
    audio_ahead: bool = Field(
        default=True,
        description="Compute VAD and log-mel in the decode thread, overlapping perception (same results).",
    )
    gallery_frame_width: int = Field(
        default=1280, ge=64, le=3840,
        description="Gallery replay (--layout gallery): width the whole frame is sampled at before it is cut into "
        "tiles (never above the recording's own width).",
    )
    gallery_samples: int = Field(
        default=16, ge=2, le=256, description="Gallery replay: frames sampled over the recording to find the tiles."
    )
    gallery_window_s: float = Field(
        default=1.5, ge=0.4, le=10.0,
        description="Gallery replay: window (centred on each voiced audio chunk) over which mouth motion is "
        "compared with voice activity to attribute the speech.",
    )
    gallery_min_motion: float = Field(
        default=0.02, ge=0.0, le=1.0,
        description="Gallery replay: least score (mean lip-gap change per frame with voice minus without) a face "
        "needs to be given the voice.",
    )
    gallery_margin: float = Field(
        default=1.5, ge=1.0, le=100.0,
        description="Gallery replay: the best face's score must be this many times the runner-up's, else the "
        "voice is unattributed (tied).",
    )
