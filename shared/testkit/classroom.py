"""A class of students as live media: frames and audio chunks made on the fly, fed like ingest feeds them.

Each student follows a :class:`~shared.testkit.script.SampleScript` (a real photo frontal, turned
away or absent; speech from espeak-ng over low noise). :class:`LiveClass` makes the messages of
one analysis tick for every student (a frame per tick, an audio chunk every ``chunk_s``) with
stable sequence numbers and media times, so two runs on the same class send the same media;
:func:`feed_live` appends them in real time to a media bus, keyed by participant as ingest does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from shared.contracts.codec import encode_media
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import TimingTrail
from shared.testkit.frames import SampleFrames
from shared.testkit.photos import PhotoName, photo
from shared.testkit.script import SampleScript, Segment, SpeechSpan, default_script
from shared.testkit.speech import AUDIO_RATE, Wave, soundtrack
from shared.transport.base import MediaBus
from shared.transport.shards import participant_key

RATE = 16_000
"""Sample rate of the audio chunks (what ingest sends)."""


@dataclass(frozen=True)
class Student:
    participant: str
    script: SampleScript
    photo: PhotoName = "astronaut"


def listener(participant: str, seconds: float, *, photo_name: PhotoName = "astronaut") -> Student:
    """A student facing the screen the whole time, silent (noise only on the mic)."""
    script = SampleScript(segments=(Segment(0.0, seconds, "frontal"),), speech=())
    return Student(participant, script, photo_name)


def active(participant: str, seconds: float, *, photo_name: PhotoName = "grace_hopper") -> Student:
    """A student who looks away, leaves and comes back, and speaks three times (the sample class script)."""
    return Student(participant, default_script(seconds), photo_name)


def mixed_class(n: int, seconds: float, *, prefix: str = "student") -> list[Student]:
    """``n`` students: every other one a frontal listener, the rest active (looking away, leaving, speaking)."""
    return [
        listener(f"{prefix}-{i:02d}", seconds) if i % 2 == 0 else active(f"{prefix}-{i:02d}", seconds) for i in range(n)
    ]


def _downsample(wave: Wave, factor: int) -> Wave:
    """Average ``factor`` samples (a box filter, enough for speech energy below 4 kHz)."""
    n = len(wave) // factor * factor
    out: Wave = wave[:n].reshape(-1, factor).mean(axis=1).astype(np.float32)
    return out


class LiveClass:
    """The media of a class, tick by tick (``fps`` frames a second, ``chunk_s`` audio chunks)."""

    def __init__(
        self,
        *,
        session: str,
        students: Sequence[Student],
        fps: float = 5.0,
        chunk_s: float = 0.5,
        width: int = 320,
        height: int = 240,
    ) -> None:
        if fps <= 0 or chunk_s <= 0:
            raise ValueError("fps and chunk_s must be positive")
        self.session = session
        self.students = list(students)
        self.fps = fps
        self.chunk_s = chunk_s
        photos = {name: photo(name) for name in {s.photo for s in students}}
        sounds: dict[tuple[SpeechSpan, ...], Wave] = {}
        self._frames: list[SampleFrames] = []
        self._audio: list[Wave] = []
        for student in self.students:
            script = replace(student.script, width=width, height=height)
            self._frames.append(SampleFrames(script=script, photo=photos[student.photo]))
            if script.speech not in sounds:
                sounds[script.speech] = _downsample(soundtrack(script), AUDIO_RATE // RATE)
            self._audio.append(sounds[script.speech])

    def ticks(self, seconds: float) -> int:
        return int(seconds * self.fps)

    def messages(self, tick: int, *, capture_ts: float) -> list[MediaMessage]:
        """Every student's frame of ``tick`` and the audio chunks starting before the next tick, captured at
        ``capture_ts``."""
        t = tick / self.fps
        n = round(self.chunk_s * RATE)
        first = math.ceil(t / self.chunk_s - 1e-9)
        chunks = [k for k in range(first, first + 2) if k * self.chunk_s < (tick + 1) / self.fps - 1e-9]
        out: list[MediaMessage] = []
        for student, frames, wave in zip(self.students, self._frames, self._audio, strict=True):
            trail = TimingTrail(capture_ts=capture_ts)
            for k in chunks:
                part = wave[k * n : (k + 1) * n]
                if len(part) == n:
                    out.append(
                        AudioChunk.from_waveform(
                            np.ascontiguousarray(part),
                            sample_rate=RATE,
                            session=self.session,
                            participant=student.participant,
                            seq=k,
                            media_time=k * self.chunk_s,
                            timing=trail,
                        )
                    )
            image = frames.frame(student.script.visual_at(t), t)
            out.append(
                VideoFrame.from_image(
                    image, session=self.session, participant=student.participant, seq=tick, media_time=t, timing=trail
                )
            )
        return out


async def feed_live(
    bus: MediaBus,
    live: LiveClass,
    *,
    seconds: float,
    first_tick: int = 0,
    on_tick: Callable[[int], None] | None = None,
) -> int:
    """Append ticks ``first_tick ..`` for ``seconds`` in real time (capture time = now); returns the next tick."""
    start = time.monotonic()
    last = first_tick + live.ticks(seconds)
    for tick in range(first_tick, last):
        await asyncio.sleep(max(0.0, start + (tick - first_tick) / live.fps - time.monotonic()))
        for msg in live.messages(tick, capture_ts=time.time()):
            await bus.append(encode_media(msg), key=participant_key(msg.session, msg.participant))
        if on_tick is not None:
            on_tick(tick)
    return last
