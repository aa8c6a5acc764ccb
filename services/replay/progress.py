"""Replay progress on stderr (a tqdm bar) with one speed figure.

The speed is media seconds analysed / wall seconds since the replay started (model loading
included): the same figure, from the same clock, that ``classpulse replay`` prints when it
finishes. The pipeline passes the elapsed time in, so the bar keeps no clock of its own.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol, TextIO

from tqdm import tqdm


class ProgressSink(Protocol):
    """What the replay pipeline reports to while it runs (``elapsed_s``: wall seconds since its start)."""

    def update(self, *, media_time: float, frames: int, elapsed_s: float) -> None: ...

    def finish(self, *, media_time: float, frames: int, elapsed_s: float) -> None: ...


class NoProgress:
    """Reports nothing (library use, tests)."""

    def update(self, *, media_time: float, frames: int, elapsed_s: float) -> None:
        return None

    def finish(self, *, media_time: float, frames: int, elapsed_s: float) -> None:
        return None


def speed_text(*, media_time: float, elapsed_s: float) -> str:
    """``12.6 s of media in 0.6 s = 21.0x real time``: the one speed figure of a replay."""
    factor = media_time / elapsed_s if elapsed_s > 0 else 0.0
    return f"{media_time:.1f} s of media in {elapsed_s:.1f} s = {factor:.1f}x real time"


def _screen(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and lines; a pseudo-terminal without a size (0 x 0) gets 100 x 24."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 100, 24
    return size.columns or 100, size.lines or 24


class ProgressBar:
    """A bar redrawn in place on a terminal; elsewhere (CI logs, pipes) only the final line."""

    def __init__(self, *, total_s: float | None, stream: TextIO | None = None) -> None:
        self.total_s = total_s if total_s and total_s > 0 else None
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None  # tqdm, opened at the first update (after the models load)

    def _draw(self, media_time: float, frames: int, elapsed_s: float) -> None:
        text = f"{speed_text(media_time=media_time, elapsed_s=elapsed_s)}, {frames} frames"
        if self._bar is None:
            columns, lines = _screen(self.stream)
            self._bar = tqdm(
                total=self.total_s, desc=text, file=self.stream, ncols=columns, nrows=lines, mininterval=0.2,
                bar_format="{percentage:3.0f}%|{bar}| {desc}" if self.total_s else "{desc}", leave=True,
            )
        self._bar.set_description_str(text, refresh=False)
        self._bar.update(max(0.0, min(media_time, self.total_s or media_time) - self._bar.n))

    def update(self, *, media_time: float, frames: int, elapsed_s: float) -> None:
        if self._tty:
            self._draw(media_time, frames, elapsed_s)

    def finish(self, *, media_time: float, frames: int, elapsed_s: float) -> None:
        if not self._tty:
            self.stream.write(f"analysed {speed_text(media_time=media_time, elapsed_s=elapsed_s)}, {frames} frames\n")
            self.stream.flush()
            return
        self._draw(media_time, frames, elapsed_s)
        self._bar.refresh()
        self._bar.close()
