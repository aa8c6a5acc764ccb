"""Encoded clips (PyAV): the scripted sample class, the ``simulate`` clip, and recordings cut short.

    truth = make_clip(tmp_path / "class.webm", seconds=24, photo="astronaut")

:func:`write_sample` encodes a :class:`~shared.testkit.script.SampleScript` (H.264/AAC .mp4 or
VP8/Opus .webm) and returns its per-second truth; :func:`write_clip` encodes the panning photo
with a beeping tone that ``classpulse simulate`` relays over WebRTC (real-time VP8 or
constrained-baseline H.264, which aiortc accepts); :func:`write_webcam_clip` encodes a student at a
webcam (sways, turns away, speaks) the same way, for live load tests. Nothing but the requested
file is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av

from shared.testkit import photos
from shared.testkit.frames import SampleFrames, cover, pan
from shared.testkit.photos import Image, PhotoName, grace_hopper
from shared.testkit.script import SampleScript, TruthRow, default_script, truth_timeline, webcam_script
from shared.testkit.speech import AUDIO_RATE, Wave, soundtrack, tone

VideoCodec = Literal["vp8", "h264"]

SAMPLE_CODECS: dict[str, tuple[str, dict[str, str], str]] = {
    "mp4": ("libx264", {"preset": "veryfast", "crf": "23", "threads": "8"}, "aac"),
    "webm": ("libvpx", {"b": "800k", "deadline": "realtime", "cpu-used": "16"}, "libopus"),
}
"""Sample class container -> (video encoder, its options, audio encoder).

x264's output depends on its thread count, which defaults to 1.5x the machine's cores: the same
clip differed between this 2-core box and CI's larger one (and a gallery test passed here and failed
there). A fixed count makes every generated clip the same bytes on every machine."""
AUDIO_BLOCK = 960
"""Samples per encoded audio frame (20 ms at 48 kHz)."""


def write_sample(
    path: Path,
    *,
    script: SampleScript | None = None,
    photo: Image | None = None,
    audio: bool = True,
    video: bool = True,
    start_s: float = 0.0,
) -> list[TruthRow]:
    """Encode the scripted clip to ``path`` (container from its suffix) and return the truth per second.

    The face is ``photo`` (default: Grace Hopper); the sound is :func:`~shared.testkit.speech.soundtrack`.
    ``start_s`` stamps the container's timestamps from that time on (a recorder's wall-clock start:
    PyAV then reports it as ``container.start_time``); the truth counts from the clip's own start.
    """
    script = script or default_script()
    kind = path.suffix.lstrip(".").lower()
    if kind not in SAMPLE_CODECS:
        raise ValueError(f"unsupported sample container {path.suffix!r}; use .mp4 or .webm")
    vcodec, voptions, acodec = SAMPLE_CODECS[kind]
    picture: Callable[[int], Image] | None = None
    if video:
        frames = SampleFrames(script=script, photo=photo if photo is not None else grace_hopper())

        def picture(i: int) -> Image:
            t = i / script.fps
            return frames.frame(script.visual_at(t), t)

    encode(
        path,
        fps=script.fps,
        size=(script.width, script.height),
        n_frames=round(script.duration_s * script.fps),
        picture=picture,
        video_codec=(vcodec, voptions),
        sound=soundtrack(script) if audio else None,
        audio_codec=acodec,
        start_s=start_s,
    )
    return truth_timeline(script, video=video, audio=audio)


def make_clip(
    path: Path,
    *,
    seconds: float = 24.0,
    photo: PhotoName = "grace_hopper",
    video: bool = True,
    audio: bool = True,
    script: SampleScript | None = None,
) -> list[TruthRow]:
    """:func:`write_sample` of the default script of ``seconds`` (or ``script``) with a photo by name."""
    return write_sample(
        path, script=script or default_script(seconds), photo=photos.photo(photo), video=video, audio=audio
    )


def write_clip(
    path: Path,
    *,
    seconds: float,
    width: int = 640,
    height: int = 480,
    fps: int = 15,
    video: VideoCodec | None = "vp8",
    audio: bool = True,
) -> Path:
    """Encode the ``simulate`` clip: Grace Hopper's photo panning, a 220 Hz tone in bursts.

    Opus audio in .webm and .mkv, AAC otherwise.
    """
    if video is None and not audio:
        raise ValueError("a clip needs video, audio or both")
    path = Path(path)
    picture: Callable[[int], Image] | None = None
    if video is not None:
        base = cover(grace_hopper(), width, height)

        def picture(i: int) -> Image:
            return pan(base, i, fps, width, height)

    encode(
        path,
        fps=fps,
        size=(width, height),
        n_frames=round(seconds * fps),
        picture=picture,
        video_codec=_live_codec(video or "vp8", fps),
        sound=tone(seconds) if audio else None,
        audio_codec="libopus" if path.suffix in (".webm", ".mkv") else "aac",
    )
    return path


def write_webcam_clip(
    path: Path,
    *,
    seconds: float = 20.0,
    photo: PhotoName = "grace_hopper",
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    video_kbps: int = 800,
) -> list[TruthRow]:
    """A student at a webcam for live load tests: :func:`~shared.testkit.script.webcam_script` as a relayable clip.

    The photo stands in a room, sways, turns away twice and speaks (espeak-ng) three times,
    encoded like :func:`write_clip` (real-time VP8 + Opus; the suffix should be .webm or .mkv),
    so ``classpulse simulate --media`` relays it without re-encoding. ``fps`` and ``video_kbps``:
    what the camera sends (the join page caps a browser's camera at the analysed rate and a
    bitrate, see services/ingest/static/join.js). Returns the truth per second.
    """
    script = dataclasses.replace(webcam_script(seconds, width=width, height=height), fps=fps)
    frames = SampleFrames(script=script, photo=photos.photo(photo))

    def picture(i: int) -> Image:
        t = i / script.fps
        return frames.frame(script.visual_at(t), t)

    encode(
        Path(path),
        fps=script.fps,
        size=(width, height),
        n_frames=round(script.duration_s * script.fps),
        picture=picture,
        video_codec=_live_codec("vp8", script.fps, kbps=video_kbps),
        sound=soundtrack(script),
        audio_codec="libopus",
    )
    return truth_timeline(script)


def truncate(src: Path, dst: Path, *, keep: float) -> Path:
    """Copy the first ``keep`` share of ``src``'s bytes to ``dst`` (a recording cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _live_codec(video: VideoCodec, fps: int, *, kbps: int = 800) -> tuple[str, dict[str, str]]:
    """Encoders a WebRTC peer can relay as they are: no look-ahead, H.264 constrained baseline, and a
    keyframe every 2 s. A relayed clip cannot answer a receiver's keyframe request (PLI) as a camera
    does, so the keyframes stand in for it: after a lost packet every later frame decodes to garbage
    (no face in it) until the next keyframe — with libvpx's default of one per 8.5 s that was up to
    8.5 s of "not in frame", enough for a false away alert after a broker fault."""
    gop = str(fps * 2)
    if video == "vp8":
        return "libvpx", {"b": f"{kbps}k", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                          "g": gop}
    return "libx264", {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": gop}


def encode(
    path: Path,
    *,
    fps: int,
    size: tuple[int, int],
    n_frames: int,
    picture: Callable[[int], Image] | None,
    video_codec: tuple[str, dict[str, str]],
    sound: Wave | None,
    audio_codec: str,
    start_s: float = 0.0,
) -> None:
    """Mux ``n_frames`` pictures at ``fps`` and the sound (mono, 48 kHz) interleaved frame by frame,
    timestamps starting at ``start_s``."""
    n_frames = max(1, n_frames)
    v0, a0 = round(start_s * fps), round(start_s * AUDIO_RATE)
    with av.open(str(path), "w") as out:
        vstream: av.VideoStream | None = None
        if picture is not None:
            vcodec, voptions = video_codec
            vstream = cast(av.VideoStream, out.add_stream(vcodec, rate=fps))
            vstream.width, vstream.height = size
            vstream.pix_fmt = "yuv420p"
            vstream.codec_context.time_base = Fraction(1, fps)
            vstream.options = voptions  # type: ignore[assignment]
        astream: av.AudioStream | None = None
        if sound is not None:
            astream = cast(av.AudioStream, out.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono"))
        a_pos = 0
        for i in range(n_frames):
            if vstream is not None and picture is not None:
                frame = av.VideoFrame.from_ndarray(picture(i), format="bgr24")
                frame.pts = v0 + i
                out.mux(vstream.encode(frame))
            if astream is not None and sound is not None:
                until = round((i + 1) / fps * AUDIO_RATE) if i + 1 < n_frames else len(sound)
                while a_pos < until:
                    block = sound[a_pos : min(a_pos + AUDIO_BLOCK, until)]
                    aframe = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
                    aframe.sample_rate = AUDIO_RATE
                    aframe.pts = a0 + a_pos
                    aframe.time_base = Fraction(1, AUDIO_RATE)
                    out.mux(astream.encode(aframe))
                    a_pos += len(block)
        if vstream is not None:
            out.mux(vstream.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
