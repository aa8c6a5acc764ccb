"""A progress line on stderr: share of the media done, analysis speed and multiple of real time."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class ProgressSink(Protocol):
    """What the replay pipeline reports to while it runs."""

    def update(self, *, media_time: float, frames: int) -> None: ...

    def finish(self, *, media_time: float, frames: int) -> None: ...


class NoProgress:
    """Reports nothing (library use, tests)."""

    def update(self, *, media_time: float, frames: int) -> None:
        return None

    def finish(self, *, media_time: float, frames: int) -> None:
        return None


class ProgressBar:
    """The clock starts at the first update (after models load).

    ``[#####.....]  42%  12.6/30.0 s  96 frames/s  21x real time`` redrawn in place on a terminal.

    Not a terminal (CI logs, pipes): one plain line per 10 % instead of carriage returns.
    """

    def __init__(self, *, total_s: float | None, stream: TextIO | None = None, width: int = 30) -> None:
        self.total_s = total_s if total_s and total_s > 0 else None
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started: float | None = None
        self._last_draw = 0.0
        self._last_decile = -1

    def _line(self, media_time: float, frames: int) -> str:
        if self._started is None:
            self._started = time.perf_counter()
        elapsed = max(time.perf_counter() - self._started, 1e-6)
        speed = f"{frames / elapsed:5.0f} frames/s  {media_time / elapsed:5.1f}x real time" if elapsed > 0.1 else ""
        if self.total_s is None:
            return f"analysed {media_time:7.1f} s  {speed}"
        share = min(1.0, media_time / self.total_s)
        filled = round(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {share:4.0%}  {media_time:6.1f}/{self.total_s:.1f} s  {speed}"

    def update(self, *, media_time: float, frames: int) -> None:
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.2:
                self._last_draw = now
                self.stream.write("\r" + self._line(media_time, frames))
                self.stream.flush()
            return
        decile = int(10 * media_time / self.total_s) if self.total_s else int(media_time // 60)
        if decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(self._line(media_time, frames) + "\n")
            self.stream.flush()

    def finish(self, *, media_time: float, frames: int) -> None:
        line = self._line(media_time, frames)
        self.stream.write(("\r" + line + "\n") if self._tty else line + "\n")
        self.stream.flush()
