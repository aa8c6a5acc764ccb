"""The analysed frame rate a consumer wants from its media sources: thinning at the source.

Inference's degradation policy (:mod:`services.inference.degrade`) lowers every participant's
analysed frame rate under overload. Frames above that rate are acked unanalysed, so ingest
would still encode, relay and inference still read and decode each one (~0.7 MB raw BGR at
640x360). Instead the rate travels back to ingest, which samples at it:

* :class:`SourceRate` is one process's current wish, shared by every video sampler of that
  process (``None`` = no cap: the sampler's own rate). Ingest samplers call :meth:`SourceRate.cap`.
* :class:`RateRecord` is that wish on the wire (``classpulse up``'s relay sends it as an ``F``
  record from the main process to its ingest processes; :func:`encode_rate` / :func:`decode_rate`).

Both ends tick on the same grid of media time (``floor(t * fps) + 1) / fps``), so the frames
ingest keeps are exactly those the policy would admit, and the policy thins nothing more.
Audio is never capped (speaking keeps its full rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MIN_FPS = 0.1
MAX_FPS = 120.0


class RateError(ValueError):
    """A rate record that is not valid JSON of the expected shape, or out of range."""


@dataclass(frozen=True, slots=True)
class RateRecord:
    """The analysed frames per second per participant a consumer wants; ``None`` = as many as sampled."""

    fps: float | None

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and MIN_FPS <= self.fps <= MAX_FPS):
            raise RateError(f"analysed fps must be within [{MIN_FPS:g}, {MAX_FPS:g}] or null, not {self.fps!r}")


def encode_rate(record: RateRecord) -> bytes:
    return json.dumps({"fps": record.fps}, separators=(",", ":")).encode()


def decode_rate(data: bytes) -> RateRecord:
    """Parse a record written by :func:`encode_rate`; :class:`RateError` says what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RateError(f"rate record is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != {"fps"}:
        raise RateError('rate record must be {"fps": number|null}')
    fps = raw["fps"]
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float)):
        raise RateError(f"analysed fps must be a number or null, not {type(fps).__name__}")
    return RateRecord(fps=None if fps is None else float(fps))


class SourceRate:
    """The current rate cap of one process's video samplers (set by whoever hears the consumer)."""

    def __init__(self) -> None:
        self.fps: float | None = None
        self.updates = 0

    def set(self, record: RateRecord) -> None:
        if record.fps != self.fps:
            self.fps = record.fps
            self.updates += 1

    def cap(self, fps: float) -> float:
        """The rate a sampler configured for ``fps`` samples at now."""
        return fps if self.fps is None else min(fps, self.fps)
