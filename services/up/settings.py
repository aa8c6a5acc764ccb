"""``classpulse up`` settings (environment variables ``CLASSPULSE_UP_*``)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StrictSettings, register_settings

MAX_INGEST_PROCESSES = 8


@register_settings
class UpProcessSettings(StrictSettings):
    """How ``classpulse up`` spreads its work over processes."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_UP_", extra="forbid", case_sensitive=False)

    ingest_processes: str = Field(
        default="auto",
        pattern=r"^(auto|[0-8])$",
        description="Processes receiving WebRTC (decode + sampling), each with its own event loop, relaying media "
        "to the main process; 0 = in the main process; 'auto' = one per core up to 4 on 2+ cores, else 0.",
    )

    thin_at_source: bool = Field(
        default=True,
        description="Tell ingest the frame rate inference analyses under overload, so it samples video at that "
        "rate instead of relaying frames inference would drop (audio keeps its full rate).",
    )

    def ingest_process_count(self) -> int:
        """The number of ingest processes ``ingest_processes`` asks for on this machine."""
        if self.ingest_processes != "auto":
            return int(self.ingest_processes)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 0 if cores < 2 else min(cores, 4)
