"""Settings of the inference worker (``CLASSPULSE_INFERENCE_*``).

Batching defaults, checked with ``python -m bench.inference_cpu`` on a shared 2-core box: a
50 ms wait budget adds at most 50 ms to a frame (one 5 fps stream: p50 87 ms capture -> score),
and 16 items are about three frames of each of five streams, enough to share the per-batch
work (VAD and fusion run once per batch) while one batch stays well under a second on CPU.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.inference.degrade import DegradeConfig
from services.inference.perception_registry import BACKENDS, spec_for
from shared.settings import StrictSettings, register_settings

GPU_BATCH_MAX = 128
"""``batch_max`` when the torch backend is chosen and ``BATCH_MAX`` is not set: about a GPU worker's students."""
GPU_BATCH_WAIT_MS = 20.0
"""``batch_wait_ms`` when the torch backend is chosen and ``BATCH_WAIT_MS`` is not set (inside 100 ms p95)."""


@register_settings
class InferenceSettings(StrictSettings):
    """Perception, fusion and micro-batching of the inference worker."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_INFERENCE_", extra="forbid", case_sensitive=False)

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where the fusion model and the torch perception backend run: 'auto' picks CUDA when "
        "available, else CPU.",
    )
    backend: str = Field(
        default="mediapipe",
        max_length=64,
        description="Perception backend, one of: "
        + "; ".join(f"{spec.name} ({spec.description})" for spec in BACKENDS.values())
        + ".",
    )
    batch_max: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Flush a micro-batch when it holds this many items (with BACKEND=torch and this unset: "
        f"{GPU_BATCH_MAX}, a GPU wants big batches).",
    )
    batch_wait_ms: float = Field(
        default=50.0,
        ge=0.0,
        le=5000.0,
        description="Flush when the oldest item in the batch has waited this long (with BACKEND=torch and this "
        f"unset: {GPU_BATCH_WAIT_MS:g}).",
    )
    queue_max: int = Field(
        default=256, ge=1, le=100_000, description="Bound of the worker's in-process queue (oldest dropped past it)."
    )
    max_lag_ms: float = Field(
        default=1000.0,
        ge=0.0,
        le=600_000.0,
        description="Live overload guard: a frame captured longer ago than this is dropped unscored (counted); "
        "0 = never drop. Audio is always scored.",
    )
    degrade: bool = Field(
        default=True,
        description="Live overload guard: when the worker cannot keep up, lower every participant's analysed frame "
        "rate together (down to MIN_FPS; skipped frames are counted as dropped, reason 'degraded') instead of "
        "dropping stretches of frames; audio is never thinned. Off when MAX_LAG_MS is 0.",
    )
    min_fps: float = Field(
        default=1.0,
        ge=0.2,
        le=30.0,
        description="Floor of the analysed frames per second per participant under overload (head pose is then a "
        "median over 3 s, the fusion window 8 s); frames that still cannot be served are dropped as stale.",
    )
    full_fps: float = Field(
        default=5.0,
        ge=0.2,
        le=60.0,
        description="Analysed frame rate per participant the worker climbs back to (ingest's analysis rate); at or "
        "above it every frame is analysed.",
    )
    degrade_busy: float = Field(
        default=0.9,
        gt=0.1,
        le=1.0,
        description="Overloaded when the batch loop is busy more than this share of the time (it then aims at "
        "0.75 of it; climbs back one 0.5 fps step when the next step is predicted below that).",
    )
    degrade_wait_ms: float = Field(
        default=500.0,
        ge=10.0,
        le=60_000.0,
        description="Overloaded when frames wait longer than this on average between ingest and their batch.",
    )
    degrade_recover_s: float = Field(
        default=5.0,
        ge=0.0,
        le=600.0,
        description="Load must stay low this long before the analysed frame rate steps up again (hysteresis).",
    )
    read_count: int = Field(default=64, ge=1, le=4096, description="Entries read from the owned media shards per call.")
    read_block_ms: int = Field(default=20, ge=1, le=10_000, description="How long one stream read may wait.")
    claim_idle_ms: int = Field(
        default=5000,
        ge=100,
        le=600_000,
        description="Re-claim media of an owned shard left pending this long (a failed batch); a taken-over "
        "shard's pending media is claimed at once.",
    )
    claim_interval_s: float = Field(
        default=2.0, gt=0.0, le=600.0, description="How often to look for stale media in owned shards."
    )
    lease_ttl_ms: int = Field(
        default=3000,
        ge=500,
        le=5000,
        description="A worker's shard leases and membership expire this long after its last renewal: a dead "
        "worker's shards (and their pending media) are taken over after at most this plus one renewal interval.",
    )
    lease_renew_ms: int = Field(
        default=1000,
        ge=50,
        le=2500,
        description="How often a worker heartbeats, renews its leases and rebalances (at most a third of "
        "lease_ttl_ms).",
    )
    snapshot_interval_s: float = Field(
        default=2.0,
        ge=0.1,
        le=2.0,
        description="How often the owner stores a snapshot of each participant's state (baseline, fusion "
        "window, VAD stream) for the next owner; also stored on every hand-over.",
    )
    snapshot_ttl_s: float = Field(
        default=600.0,
        ge=10.0,
        le=86_400.0,
        description="A stored participant snapshot is kept this long after its last write.",
    )
    drain_timeout_s: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="On a rebalance, how long a worker finishes the media it already read from a shard before "
        "it snapshots the shard's participants and releases it (unfinished media goes to the next owner).",
    )
    consumer_name: str = Field(
        default="", max_length=128, description="Consumer name in the group; empty = hostname-pid (unique per process)."
    )
    window_steps: int = Field(default=8, ge=1, le=64, description="Recent analysis steps the fusion model sees.")
    calibration_s: float = Field(
        default=3.0, ge=0.0, le=120.0, description="Seconds of face-present media used for the yaw/pitch baseline."
    )
    baseline_limit_deg: float = Field(
        default=20.0, ge=0.0, le=45.0, description="The calibrated yaw/pitch baseline is clamped to +/- this."
    )
    yaw_cone_deg: float = Field(
        default=20.0, gt=0.0, le=90.0, description="Attentive: |yaw - baseline| below this (prior weights only)."
    )
    pitch_cone_deg: float = Field(
        default=20.0, gt=0.0, le=90.0, description="Attentive: |pitch - baseline| below this (prior weights only)."
    )
    perception_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Perception backend instances run in parallel threads on one batch (mediapipe releases the GIL); "
        "a participant stays on one instance.",
    )
    mesh_trackers: int = Field(
        default=32,
        ge=0,
        le=1024,
        description="Participants per perception thread whose face mesh runs in mediapipe's tracking mode (one "
        "graph each, ~20 MB; least recently used closed past it, the rest use the static graph): ~30 % less mesh "
        "time, but a sudden head turn reads 3-4 frames late; 0 = static mode for everyone.",
    )
    detect_width: int = Field(
        default=320, ge=96, le=1920, description="Frames are downscaled to this width for full-range face detection."
    )
    pose_every: int = Field(
        default=5, ge=1, le=1000, description="Run pose (hand raise) on every Nth frame of a participant with a face."
    )
    pose_motion: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Pose runs on its Nth frame only after motion above this (mean thumbnail difference) since the "
        "last pose, while a hand is up, or every pose_max_interval frames; 0 = every Nth frame.",
    )
    pose_max_interval: int = Field(
        default=25,
        ge=1,
        le=10_000,
        description="Run pose at least every this many frames of a participant with a face.",
    )
    camera_off_after_s: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        description="No frame for this long (media time) = camera off; audio then drives steps.",
    )
    audio_grace_s: float = Field(
        default=0.5, ge=0.0, le=10.0, description="Wait this long for a first frame before scoring audio-only."
    )
    state_idle_s: float = Field(
        default=300.0,
        gt=0.0,
        le=86_400.0,
        description="The worker forgets a participant's state (baseline, windows) after this long without media.",
    )
    torch_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="torch intra-op threads set by the worker/train entry points (0 = torch's default); "
        "the fusion model is tiny, and extra threads only contend on small boxes.",
    )
    weights_path: str = Field(
        default="",
        max_length=4096,
        description="Fusion weights written by `classpulse train` (.pt); empty = built-in priors.",
    )

    @model_validator(mode="after")
    def _renew_well_before_expiry(self) -> InferenceSettings:
        if self.lease_renew_ms * 3 > self.lease_ttl_ms:
            raise ValueError(
                f"lease_renew_ms ({self.lease_renew_ms}) must be at most a third of lease_ttl_ms ({self.lease_ttl_ms})"
            )
        return self

    @model_validator(mode="after")
    def _gpu_batches(self) -> InferenceSettings:
        """The torch backend batches across students on a GPU: bigger, quicker micro-batches unless set."""
        if self.backend == "torch":
            if "batch_max" not in self.model_fields_set:
                self.batch_max = GPU_BATCH_MAX
            if "batch_wait_ms" not in self.model_fields_set:
                self.batch_wait_ms = GPU_BATCH_WAIT_MS
        return self

    @model_validator(mode="after")
    def _fps_bounds(self) -> InferenceSettings:
        if self.min_fps > self.full_fps:
            raise ValueError(
                f"CLASSPULSE_INFERENCE_MIN_FPS ({self.min_fps}) must not exceed CLASSPULSE_INFERENCE_FULL_FPS "
                f"({self.full_fps})"
            )
        return self

    def degrade_config(self) -> DegradeConfig:
        """The overload policy's bounds and thresholds from these settings."""
        return DegradeConfig(
            max_fps=self.full_fps,
            min_fps=self.min_fps,
            busy_high=self.degrade_busy,
            busy_target=0.75 * self.degrade_busy,
            wait_high_s=self.degrade_wait_ms / 1000,
            recover_s=self.degrade_recover_s,
        )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        return spec_for(name).name  # a readable error listing the registered backends
