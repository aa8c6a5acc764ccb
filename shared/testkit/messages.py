"""Media messages from generated pictures and sound, as ingest would send them."""

from __future__ import annotations

import time

import numpy as np

from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.timing import TimingTrail
from shared.testkit.photos import Image
from shared.testkit.speech import Wave


def frames(
    images: list[Image], *, session: str, participant: str, fps: float = 5.0, start_seq: int = 0
) -> list[VideoFrame]:
    """VideoFrame messages for consecutive images at ``fps``."""
    now = time.time()
    return [
        VideoFrame.from_image(
            img,
            session=session,
            participant=participant,
            seq=start_seq + i,
            media_time=(start_seq + i) / fps,
            timing=TimingTrail(capture_ts=now),
        )
        for i, img in enumerate(images)
    ]


def chunks(wave: Wave, *, session: str, participant: str, chunk_s: float = 0.5, rate: int = 16000) -> list[AudioChunk]:
    """AudioChunk messages of ``chunk_s`` seconds covering the waveform (a shorter tail is dropped)."""
    n = round(chunk_s * rate)
    now = time.time()
    return [
        AudioChunk.from_waveform(
            np.ascontiguousarray(wave[i : i + n]),
            sample_rate=rate,
            session=session,
            participant=participant,
            seq=k,
            media_time=i / rate,
            timing=TimingTrail(capture_ts=now),
        )
        for k, i in enumerate(range(0, len(wave) - n + 1, n))
    ]
