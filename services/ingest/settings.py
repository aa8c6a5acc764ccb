"""Ingest settings (environment variables ``CLASSPULSE_INGEST_*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import IntFromText, StrictSettings, register_settings


@register_settings
class IngestSettings(StrictSettings):
    """WHIP endpoint, sampling rates and publisher limits of the ingest service."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_INGEST_", extra="forbid", case_sensitive=False)

    host: str = Field(
        default="127.0.0.1", min_length=1, max_length=253, description="Address `classpulse ingest` binds."
    )
    port: int = Field(default=8081, ge=0, le=65535, description="Port `classpulse ingest` binds (0 = any free port).")
    workers: str = Field(
        default="1",
        pattern=r"^(auto|[1-9][0-9]?)$",
        description="Worker processes of `classpulse ingest` sharing its port ('auto' = one per core; >1 needs "
        "the distributed transport).",
    )
    analysis_fps: float = Field(default=5.0, gt=0.0, le=30.0, description="Video frames per second sent to analysis.")
    camera_send_fps: float = Field(
        default=0.0, ge=0.0, le=60.0,
        description="Frame rate the join page asks the browser to send its camera at (0 = analysis_fps): frames "
        "above the analysed rate cost the server their receive and decode and change no result (20 students: "
        "WebRTC receive p50 2.7 s at 15 fps, 0.26 s at 5 fps). WHIP publishers other than the join page choose "
        "their own.",
    )
    camera_send_kbps: int = Field(
        default=400, ge=0, le=20_000,
        description="Most video bitrate the join page lets the browser send (kbit/s; 0 = the browser's choice, "
        "up to ~2,500 for 640x480): fewer packets to receive per student.",
    )
    frame_width: int = Field(
        default=640, ge=64, le=3840, description="Width of analysed frames in pixels (height keeps the aspect)."
    )
    audio_chunk_s: float = Field(default=0.5, ge=0.1, le=5.0, description="Length of one audio chunk in seconds.")
    max_publishers: int = Field(
        default=64, ge=1, le=10_000, description="Publishers one ingest process accepts; more get 429."
    )
    max_publishers_per_session: int = Field(
        default=40,
        ge=1,
        le=10_000,
        description="Publishers of one session one ingest process accepts, so one session cannot take every slot; "
        "more get 429. A participant publishing again replaces their resource and needs no second slot.",
    )
    whip_rate_per_token: float = Field(
        default=1.0, ge=0.0, le=10_000.0,
        description="WHIP publish requests (POST) per second per token (0: no limit); past it 429 with Retry-After.",
    )
    whip_rate_per_address: float = Field(
        default=10.0, ge=0.0, le=10_000.0,
        description="WHIP publish requests (POST) per second per client address (0: no limit; a class behind one "
        "NAT address shares it).",
    )
    whip_rate_burst_s: float = Field(
        default=10.0, ge=1.0, le=3_600.0,
        description="WHIP rate limits allow a burst of this many seconds' worth of publishes at once.",
    )
    max_sdp_bytes: int = Field(
        default=65_536, ge=1_024, le=1_048_576, description="Largest SDP offer accepted; larger bodies get 413."
    )
    cors_origin: str = Field(
        default="*", min_length=1, max_length=2048, description="Access-Control-Allow-Origin sent on WHIP responses."
    )
    max_decoded_backlog: int = Field(
        default=8,
        ge=1,
        le=1_000,
        description="Decoded frames allowed to wait in aiortc's queue per track; older ones are dropped and counted.",
    )
    video_jitter_packets: Annotated[Literal[64, 128, 256, 512], IntFromText] = Field(
        default=128,
        description="Video jitter buffer in RTP packets; a lost packet can hold a stream back this long.",
    )
    camera_off_after_s: float = Field(
        default=2.0, ge=0.2, le=60.0, description="Seconds without (or with only black) video before 'camera_off'."
    )
    mic_muted_after_s: float = Field(
        default=2.0, ge=0.2, le=60.0, description="Seconds of digital silence or no audio before 'mic_muted'."
    )
