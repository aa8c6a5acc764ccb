"""Aggregator settings (``CLASSPULSE_AGGREGATOR_*``): Kafka layout, faust worker, windows, alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.analytics.config import AggregationConfig
from shared.settings import StrictSettings, register_settings


@register_settings
class AggregatorSettings(StrictSettings):
    """The aggregator service: faust worker, state store, window sizes and alert thresholds."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_AGGREGATOR_", extra="forbid", case_sensitive=False)

    app_id: str = Field(
        default="classpulse-aggregator", min_length=1, max_length=100,
        description="faust app id: consumer group and prefix of the state changelog topic.",
    )
    topic_prefix: str = Field(
        default="", max_length=100,
        description="Prefix of every topic the aggregator reads and writes (isolates tenants and tests).",
    )
    partitions: int = Field(
        default=8, ge=1, le=1024,
        description="Partitions of the score/lifecycle topics when the aggregator creates them (and of its changelog).",
    )
    replicas: int = Field(default=1, ge=1, le=10, description="Replication factor of the topics it creates.")
    engine: Literal["faust", "plain"] = Field(
        default="faust", description="'faust': faust-streaming worker with a changelog-backed table; "
        "'plain': one aiokafka consumer with in-memory state (no recovery).",
    )
    store: Literal["rocksdb", "memory"] = Field(
        default="rocksdb", description="faust table store: 'rocksdb' (rocksdict, on disk) or 'memory'."
    )
    data_dir: Path = Field(default=Path(".cache/aggregator"), description="Folder of the faust worker's local state.")
    clock: Literal["wall", "event"] = Field(
        default="wall",
        description="'wall': windows close by the wall clock (live); 'event': by the latest event time (replays).",
    )
    tick_s: float = Field(default=0.25, gt=0.0, le=10.0, description="Seconds between time-driven window closes.")
    batch_max: int = Field(default=500, ge=1, le=100_000, description="Most score events handled in one batch.")
    batch_within_s: float = Field(
        default=0.1, gt=0.0, le=5.0, description="Longest wait to fill a batch (also the snapshot interval)."
    )
    broker_session_timeout_s: float = Field(
        default=10.0, ge=1.0, le=300.0, description="Kafka group session timeout of the worker."
    )
    broker_rebalance_timeout_s: float = Field(
        default=10.0, ge=1.0, le=300.0, description="Kafka group rebalance timeout of the worker."
    )
    broker_heartbeat_interval_s: float = Field(
        default=1.0, ge=0.1, le=60.0, description="Kafka group heartbeat interval of the worker."
    )
    stall_s: float = Field(
        default=60.0, ge=0.0, le=3600.0,
        description="Stall watchdog of the faust worker: records wait (taken from the input, or lag on the brokers) "
        "but no batch closed and no window was emitted for this long -> one error line and exit status 3, so the "
        "orchestrator restarts it (/healthz is 503 after 5 s of it). Longer than the broker outages it should ride "
        "out; 0: off.",
    )
    metrics_port: int = Field(default=9103, ge=0, le=65535, description="Port of /metrics (0: no metrics server).")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255, description="Address of /metrics.")
    end_grace_s: float = Field(
        default=2.0, ge=0.0, le=600.0,
        description="After 'session_ended' the final flush waits until the clock is this far past the end "
        "or no record arrived for this long (s).",
    )
    live_state: bool = Field(default=True, description="Write the latest class state and alerts to Redis.")

    tumbling_sizes_s: list[float] = Field(
        default=[1.0, 10.0, 60.0], min_length=1, max_length=8, description="Tumbling window sizes (s)."
    )
    hopping_size_s: float = Field(default=60.0, ge=0.0, le=3600.0, description="Hopping window size (s); 0: none.")
    hopping_step_s: float = Field(default=10.0, gt=0.0, le=3600.0, description="Hopping window step (s).")
    lateness_s: float = Field(default=1.0, ge=0.0, le=60.0, description="Accepted event lateness (s).")
    step_s: float = Field(default=0.2, gt=0.0, le=10.0, description="Nominal duration of one score event (s).")
    max_gap_s: float = Field(
        default=0.5, ge=0.0, le=10.0, description="Events closer than this last until the next one (s)."
    )
    away_after_s: float = Field(default=10.0, ge=0.0, le=3600.0, description="Alert: participant away longer (s).")
    attention_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Alert: class attentive ratio below this ..."
    )
    attention_dip_s: float = Field(default=30.0, ge=0.0, le=3600.0, description="... for this long (s).")
    silence_after_s: float = Field(
        default=300.0, ge=0.0, le=36_000.0, description="Alert: no student spoke for this long (s)."
    )
    camera_off_after_s: float = Field(default=5.0, ge=0.0, le=3600.0, description="Alert: camera off longer (s).")
    late_after_s: float = Field(
        default=300.0, ge=0.0, le=36_000.0, description="A participant joining later than this is 'late' (s)."
    )

    @model_validator(mode="after")
    def _windows_valid(self) -> AggregatorSettings:
        try:
            self.aggregation_config()
        except ValueError as exc:
            raise ValueError(f"invalid aggregation windows: {exc}") from exc
        return self

    def aggregation_config(self) -> AggregationConfig:
        """The core's configuration from these settings."""
        return AggregationConfig(
            tumbling_sizes_s=tuple(self.tumbling_sizes_s),
            hopping_size_s=self.hopping_size_s or None,
            hopping_step_s=self.hopping_step_s,
            lateness_s=self.lateness_s,
            step_s=self.step_s,
            max_gap_s=self.max_gap_s,
            away_after_s=self.away_after_s,
            attention_threshold=self.attention_threshold,
            attention_dip_s=self.attention_dip_s,
            silence_after_s=self.silence_after_s,
            camera_off_after_s=self.camera_off_after_s,
            late_after_s=self.late_after_s,
        )

    def topic(self, name: str) -> str:
        """A topic name with this aggregator's prefix."""
        return self.topic_prefix + name
