"""Gateway settings (``CLASSPULSE_GATEWAY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StrictSettings, register_settings


@register_settings
class GatewaySettings(StrictSettings):
    """REST, live feeds (WebSocket/SSE) and the teacher dashboard."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_GATEWAY_", extra="forbid", case_sensitive=False)

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255, description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port to listen on (0: any free port).")
    viewer_queue: int = Field(
        default=256, ge=8, le=10_000, description="Messages buffered per live viewer; a slow viewer loses the oldest."
    )
    heartbeat_s: float = Field(
        default=10.0, ge=1.0, le=120.0, description="Seconds between keep-alive pings on idle WebSocket/SSE feeds."
    )
    max_sessions: int = Field(
        default=200, ge=1, le=100_000, description="Sessions whose history the gateway keeps (oldest forgotten)."
    )
    max_timeline_rows: int = Field(
        default=200_000, ge=100, le=10_000_000, description="Per-second timeline rows kept per session."
    )
    max_aggregates: int = Field(
        default=3_600, ge=10, le=1_000_000, description="Class aggregates kept per session (the class timeline)."
    )
    class_window_s: float = Field(
        default=1.0,
        gt=0.0,
        le=3600.0,
        description="Tumbling window (s) the dashboard, the class timeline and the class gauges follow.",
    )
    history_group: str = Field(
        default="",
        max_length=200,
        description="Kafka consumer group of the history reader; empty: a unique group per gateway process.",
    )
    rate_per_token: float = Field(
        default=20.0, ge=0.0, le=100_000.0,
        description="REST API requests per second per token (0: no limit); past it 429 with Retry-After.",
    )
    rate_per_address: float = Field(
        default=100.0, ge=0.0, le=100_000.0,
        description="REST API requests per second per client address (0: no limit; a school behind one NAT "
        "address shares it).",
    )
    rate_burst_s: float = Field(
        default=5.0, ge=1.0, le=3_600.0,
        description="REST rate limits allow a burst of this many seconds' worth of requests at once.",
    )
    max_viewers_per_session: int = Field(
        default=100, ge=1, le=100_000,
        description="Open live feeds (WebSocket + SSE) per session; one more gets 429 with Retry-After.",
    )
    viewer_write_timeout_s: float = Field(
        default=10.0, ge=1.0, le=300.0,
        description="An SSE viewer that does not take a message within this time (it stopped reading) is "
        "dropped, as a WebSocket viewer that misses its heartbeat is.",
    )
    interactions_max_items: int = Field(
        default=500, ge=1, le=10_000, description="Most interaction events in one POST .../interactions batch."
    )
    interactions_max_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        le=16_777_216,
        description="Largest POST .../interactions body in bytes (larger: 413).",
    )
    late_after_s: float = Field(
        default=300.0,
        ge=0.0,
        le=86_400.0,
        description="Attendance: a participant whose first join comes later than this (s of session time) is late "
        "(GET .../attendance?late_after_s= overrides it per request).",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Webhook attempts per delivery before it is dead-lettered."
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0.0, le=120.0, description="Seconds one webhook attempt may take (then: timeout, retried)."
    )
    webhook_backoff_s: float = Field(
        default=2.0,
        gt=0.0,
        le=3600.0,
        description="First retry delay (s); each later one doubles, capped by webhook_backoff_max_s, with jitter "
        "(half fixed, half random).",
    )
    webhook_backoff_max_s: float = Field(
        default=600.0, gt=0.0, le=86_400.0, description="Longest delay between two webhook attempts (s)."
    )
    webhook_settle_s: float = Field(
        default=2.0,
        ge=0.0,
        le=300.0,
        description="After 'session_ended' the session.ended webhook waits this long for the last scores (they "
        "travel on another topic) before the report is made.",
    )
    webhook_timeline: bool = Field(
        default=False,
        description="Put the per-second timeline into the session.ended payload (large: ~16 MB for an hour of 30 "
        "students); off: fetch it with GET .../export.",
    )
    webhook_dead_letters: int = Field(
        default=1000, ge=1, le=1_000_000, description="Dead-letter records kept (newest; older ones dropped)."
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=1000, description="Webhook attempts in flight at once per gateway process."
    )
    webhook_dedupe_ttl_s: float = Field(
        default=7 * 86_400.0,
        ge=60.0,
        le=90 * 86_400.0,
        description="How long an event is remembered as sent (a restarted gateway re-reading the log does not send "
        "it again); older events are never sent.",
    )
