"""A generated gallery-view recording: a grid of tiles (real photos), mixed audio, and the truth.

    truth = write_gallery(tmp_path / "gallery.mp4", default_gallery())
    # classpulse replay tmp_path/gallery.mp4 --layout gallery
    agreement(truth.rows["p1"], report.timeline, participant="p1")

Each :class:`GalleryTile` has its own :class:`~shared.testkit.script.SampleScript` on the
recording's clock (frontal / turned away / empty tile, speech spans). The tiles are laid out
row by row, so tile ``k`` (0-based) is the participant the replay calls ``p{k+1}`` (ids go by
tile position, rows top to bottom, left to right). The sound is one mixed track: low noise,
and each tile's speech (espeak-ng, its own voice) at its spans; while a tile speaks its **mouth
moves with that speech** — the lower lip and chin are drawn open by the speech's loudness
envelope over a dark mouth opening — and every other mouth stays still, so the truth of who
speaks is the tile whose mouth moves with the voice. Tiles are separated by a dark gap like a
video-call gallery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from shared.contracts.report import TimelineRow
from shared.testkit import photos
from shared.testkit.clips import SAMPLE_CODECS, encode
from shared.testkit.frames import SampleFrames, paste, room, scale, turn
from shared.testkit.photos import Image, PhotoName
from shared.testkit.script import SampleScript, Segment, SpeechSpan, TruthRow, Visual, truth_timeline
from shared.testkit.speech import AUDIO_RATE, SPEECH_TEXT, Wave, espeak, level, trim, white_noise

GAP = 6
"""Dark pixels between tiles."""
GAP_COLOUR = 24
MOUTHS: dict[PhotoName, tuple[float, float, float]] = {
    "grace_hopper": (266.0, 279.5, 69.0),
    "astronaut": (223.5, 146.0, 43.0),
}
"""Mouth centre x, y and width in the photo's pixels (face mesh points 13/14 and 61/291, measured once)."""
MOUTH_OPEN = 0.45
"""Widest opening (lip gap over mouth width) at the loudest speech."""
LEVELS = 9
"""Mouth openings drawn (0 = closed .. LEVELS-1 = widest); a frame takes the nearest."""
VOICES = ("en-us", "en-gb+f3", "en-us+m3", "en-gb-scotland+f2", "en-029", "en-us+f4")


@dataclass(frozen=True)
class GalleryTile:
    """One participant's tile: a photo, what it shows when, and when it speaks (recording time)."""

    script: SampleScript
    photo: PhotoName = "grace_hopper"
    mirror: bool = False


@dataclass(frozen=True)
class GalleryTruth:
    """Per-participant truth rows (ids ``p1..pN`` by tile position), tile boxes and the speech spans."""

    duration_s: float
    rows: dict[str, list[TruthRow]]
    bboxes: dict[str, tuple[int, int, int, int]]
    """Tile ``[x, y, w, h]`` in pixels of the recording's frame."""
    speech: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def speaking_s(self) -> float:
        return sum(b - a for spans in self.speech.values() for a, b in spans)


def tile_script(
    seconds: float, visuals: Sequence[tuple[float, float, Visual]], speech: Sequence[tuple[float, float]] = (),
    *, seed: int = 7,
) -> SampleScript:
    """A tile's script from (start, end, visual) segments covering [0, seconds) and (start, end) speech spans."""
    segments = tuple(Segment(a, b, v) for a, b, v in visuals)
    if abs(segments[-1].end - seconds) > 1e-9 or segments[0].start != 0.0:
        raise ValueError("segments must cover [0, seconds)")
    return SampleScript(segments=segments, speech=tuple(SpeechSpan(a, b) for a, b in speech), seed=seed)


def default_gallery(seconds: float = 16.0) -> list[GalleryTile]:
    """Four tiles (2x2) with turns away, an empty stretch and one speaker at a time.

    * ``p1`` (Grace Hopper) faces the camera, speaks at 0.5-3.5 s and 10.5-12.5 s;
    * ``p2`` (astronaut) looks away from 6 to 10 s, speaks at 13-15 s;
    * ``p3`` (astronaut mirrored) leaves the tile from 3 to 8 s, speaks at 8.8-10 s after coming back;
    * ``p4`` (Grace Hopper mirrored) speaks at 4.5-7.5 s, looks away from 11 to 14 s.
    """
    d = seconds
    return [
        GalleryTile(tile_script(d, [(0, d, "frontal")], [(0.5, 3.5), (10.5, 12.5)], seed=21), "grace_hopper"),
        GalleryTile(tile_script(d, [(0, 6, "frontal"), (6, 10, "away"), (10, d, "frontal")], [(13.0, 15.0)],
                                seed=22), "astronaut"),
        GalleryTile(tile_script(d, [(0, 3, "frontal"), (3, 8, "empty"), (8, d, "frontal")], [(8.8, 10.0)],
                                seed=23), "astronaut", mirror=True),
        GalleryTile(tile_script(d, [(0, 11, "frontal"), (11, 14, "away"), (14, d, "frontal")], [(4.5, 7.5)],
                                seed=24), "grace_hopper", mirror=True),
    ]


def grid_boxes(n: int, *, cols: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``[x, y, w, h]`` of ``n`` tiles in rows of ``cols`` filling the frame, ``GAP`` pixels apart."""
    rows = -(-n // cols)
    tw, th = (width - GAP * (cols - 1)) // cols, (height - GAP * (rows - 1)) // rows
    return [((k % cols) * (tw + GAP), (k // cols) * (th + GAP), tw, th) for k in range(n)]


def open_mouth(image: Image, mouth: tuple[float, float, float], opening: float) -> Image:
    """The photo with its jaw dropped so the lip gap is ``opening`` x the mouth width (dark mouth inside)."""
    if opening <= 0:
        return image
    cx, cy, mw = mouth
    h, w = image.shape[:2]
    gap = opening * mw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    reach = 1.4 * mw  # how far below the lips the chin moves with them
    below = np.clip((ys - cy) / 1.0, 0.0, None)
    fade_y = np.clip(1.0 - (below - reach) / (0.6 * mw), 0.0, 1.0)
    across = np.abs(xs - cx) / (0.95 * mw)
    fade_x = np.clip(1.3 - across, 0.0, 1.0) ** 0.7
    dy = np.where(ys > cy, gap * fade_y * fade_x, 0.0).astype(np.float32)
    moved = cv2.remap(image, xs, ys - np.minimum(dy, below), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = np.asarray(moved, np.uint8)
    axes = (max(1, round(0.36 * mw)), max(1, round(gap / 2)))
    cv2.ellipse(out, (round(cx), round(cy + gap / 2)), axes, 0, 0, 360, (35, 25, 60), -1, cv2.LINE_AA)
    return out


class _TileFrames:
    """One tile's pictures: stills per visual and mouth level, swayed and noised like the sample class."""

    def __init__(self, tile: GalleryTile, size: tuple[int, int]) -> None:
        tw, th = size
        script = tile.script
        rng = np.random.default_rng(script.seed)
        image = photos.photo(tile.photo)
        cx, cy, mw = MOUTHS[tile.photo]
        if tile.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
            cx = image.shape[1] - 1 - cx
        bg = room(tw, th, rng)
        k = 0.85 * th / image.shape[0]
        at = ((tw - round(image.shape[1] * k)) // 2, th - round(image.shape[0] * k))
        full = None
        self._stills: dict[tuple[Visual, int], Image] = {}
        for lvl in range(LEVELS):
            placed = scale(open_mouth(image, (cx, cy, mw), MOUTH_OPEN * lvl / (LEVELS - 1)), k)
            self._stills[("frontal", lvl)] = paste(bg, placed, at)
            if full is None:
                full = np.full(placed.shape[:2], 255, np.uint8)
                focal = 1.2 * placed.shape[1]
                mask = turn(full, SampleFrames.AWAY_DEGREES, focal=focal, border=0, nearest=True)
            turned = turn(placed, SampleFrames.AWAY_DEGREES, focal=1.2 * placed.shape[1], border=0)
            self._stills[("away", lvl)] = paste(bg, turned, at, mask)
        self._stills[("empty", 0)] = bg
        self._noise = [rng.integers(0, 3, size=bg.shape, dtype=np.uint8) for _ in range(3)]
        self.script = script

    def frame(self, t: float, mouth_level: int) -> Image:
        visual = self.script.visual_at(t)
        still = self._stills[(visual, 0 if visual == "empty" else mouth_level)]
        dx = round(SampleFrames.SWAY_PX * np.sin(2 * np.pi * 0.25 * t + self.script.seed))
        if visual != "empty" and dx:
            still = np.roll(still, dx, axis=1)
        return np.asarray(cv2.add(still, self._noise[int(t * 15) % len(self._noise)]), np.uint8)


def _speech_clips(tiles: Sequence[GalleryTile]) -> list[Wave]:
    """One long utterance per tile, in its own espeak-ng voice, trimmed (cut per span later)."""
    return [trim(espeak(SPEECH_TEXT * 2, rate=AUDIO_RATE, voice=VOICES[i % len(VOICES)])) for i in range(len(tiles))]


def _envelope(wave: Wave, fps: int) -> Wave:
    """Loudness 0..1 per video frame (RMS over the frame, normalised to the clip's loud frames)."""
    n = AUDIO_RATE // fps
    frames = len(wave) // n
    rms = np.sqrt(np.mean(wave[: frames * n].reshape(frames, n) ** 2, axis=1)) if frames else np.zeros(0)
    top = float(np.percentile(rms, 90)) if rms.size else 1.0
    return np.clip(rms / (top or 1.0), 0.0, 1.0).astype(np.float32)


def write_gallery(
    path: Path,
    tiles: Sequence[GalleryTile],
    *,
    cols: int = 2,
    width: int = 960,
    height: int = 540,
    speech_dbfs: float = -20.0,
    noise_dbfs: float = -45.0,
) -> GalleryTruth:
    """Encode the gallery recording to ``path`` (.mp4 H.264/AAC or .webm VP8/Opus); the truth per tile."""
    kind = path.suffix.lstrip(".").lower()
    if kind not in SAMPLE_CODECS:
        raise ValueError(f"unsupported gallery container {path.suffix!r}; use .mp4 or .webm")
    fps = tiles[0].script.fps
    duration = max(t.script.duration_s for t in tiles)
    boxes = grid_boxes(len(tiles), cols=cols, width=width, height=height)
    pictures = [_TileFrames(t, (b[2], b[3])) for t, b in zip(tiles, boxes, strict=True)]
    n_frames = round(duration * fps)
    n = round(duration * AUDIO_RATE)
    rng = np.random.default_rng(99)
    audio = white_noise(n, dbfs=noise_dbfs, rng=rng)
    mouth = np.zeros((len(tiles), n_frames), np.int64)
    speech: dict[str, list[tuple[float, float]]] = {}
    for k, (tile, utterance) in enumerate(zip(tiles, _speech_clips(tiles), strict=True)):
        voiced = utterance[np.abs(utterance) > 0.02]
        clip_all = level(utterance, speech_dbfs) if not voiced.size else utterance * (
            10 ** (speech_dbfs / 20) / float(np.sqrt(np.mean(voiced**2))))
        pos = 0
        for span in tile.script.speech:
            a, b = round(span.start * AUDIO_RATE), min(n, round(span.end * AUDIO_RATE))
            clip = np.asarray(clip_all[pos : pos + b - a], np.float32).copy()
            pos += b - a
            fade = min(len(clip), int(0.02 * AUDIO_RATE))
            if fade:
                clip[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
            audio[a : a + len(clip)] += clip
            env = _envelope(clip, fps)
            f0 = round(span.start * fps)
            levels = np.rint(env * (LEVELS - 1)).astype(np.int64)
            mouth[k, f0 : f0 + len(levels)] = levels[: max(0, n_frames - f0)]
            speech.setdefault(f"p{k + 1}", []).append((span.start, span.start + len(clip) / AUDIO_RATE))

    def picture(i: int) -> Image:
        t = i / fps
        frame = np.full((height, width, 3), GAP_COLOUR, np.uint8)
        for k, (pic, (x, y, w, h)) in enumerate(zip(pictures, boxes, strict=True)):
            frame[y : y + h, x : x + w] = pic.frame(t, int(mouth[k, i]))
        return frame

    vcodec, voptions, acodec = SAMPLE_CODECS[kind]
    encode(path, fps=fps, size=(width, height), n_frames=n_frames, picture=picture,
           video_codec=(vcodec, voptions), sound=np.clip(audio, -1.0, 1.0).astype(np.float32), audio_codec=acodec)
    ids = [f"p{k + 1}" for k in range(len(tiles))]
    return GalleryTruth(
        duration_s=duration,
        rows={pid: truth_timeline(t.script) for pid, t in zip(ids, tiles, strict=True)},
        bboxes=dict(zip(ids, boxes, strict=True)),
        speech={pid: speech.get(pid, []) for pid in ids},
    )


def attribution_share(truth: GalleryTruth, rows: Sequence[TimelineRow]) -> float:
    """Of the seconds in which one participant truly speaks (none within 1 s of a speech edge), the share
    in which the report has exactly that participant speaking (1.0 when nobody speaks)."""
    by = {(r.participant, r.t): r.speaking for r in rows}
    judged = hits = 0
    for t in range(int(np.ceil(truth.duration_s))):
        rows_t = {pid: truth.rows[pid][t] for pid in truth.rows}
        if any(r.near_boundary.get("speaking", False) for r in rows_t.values()):
            continue
        talkers = [pid for pid, r in rows_t.items() if r.speaking]
        if len(talkers) != 1:
            continue
        judged += 1
        said = [pid for pid in truth.rows if by.get((pid, float(t)), False)]
        hits += said == talkers
    return hits / judged if judged else 1.0
