"""A generated class: one recording per participant with its own script, photo and start, and the truth.

    members = default_class()
    truth = write_class(tmp_path / "class", members)          # teacher.mp4, s1.webm, ... + manifest.json
    # classpulse replay tmp_path/class --teacher teacher   or   classpulse replay tmp_path/class/manifest.json
    agreement(truth.rows["s1"], report.timeline, participant="s1")

Each member is a :class:`~shared.testkit.script.SampleScript` (frontal / turned away / out of
frame, speech spans) encoded like the sample class, starting at ``offset_s`` of class time.
The truth is on **class time**: before a member's recording starts and after it ends nobody
is there (not present, not attentive, silent), and those edges count as changes (seconds next
to them are left out of :func:`~shared.testkit.script.agreement`, like any other change).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from shared.testkit import photos
from shared.testkit.clips import write_sample
from shared.testkit.photos import PhotoName
from shared.testkit.script import SampleScript, Segment, SpeechSpan, TruthRow, Visual, truth_timeline

Role = Literal["student", "teacher"]


@dataclass(frozen=True)
class Member:
    """One participant's recording in a generated class."""

    id: str
    script: SampleScript
    role: Role = "student"
    photo: PhotoName = "grace_hopper"
    mirror: bool = False
    """The photo flipped left-right (two members may share a photo and still differ)."""
    offset_s: float = 0.0
    """Class time at which the recording starts."""
    suffix: str = ".webm"
    stamp_start: bool = True
    """Stamp the container's timestamps from ``offset_s`` (``container.start_time`` = offset), as
    recorders that keep the class clock do; False: the file starts at 0 and only a manifest's
    ``offset_s`` places it."""
    manifest_offset: bool = True
    """Write ``offset_s`` into the manifest entry (False: leave it out, the container start decides)."""

    @property
    def file(self) -> str:
        return f"{self.id}{self.suffix}"


@dataclass(frozen=True)
class ClassTruth:
    """Per-participant truth rows on class time, and the class's length."""

    duration_s: float
    rows: dict[str, list[TruthRow]]


def script(
    seconds: float, visuals: Sequence[tuple[float, float, Visual]], speech: Sequence[tuple[float, float]] = (),
    *, seed: int = 7, width: int = 480, height: int = 360,
) -> SampleScript:
    """A member's script from (start, end, visual) segments and (start, end) speech spans, in its own time."""
    segments = tuple(Segment(a, b, v) for a, b, v in visuals)
    if abs(segments[-1].end - seconds) > 1e-9 or segments[0].start != 0.0:
        raise ValueError("segments must cover [0, seconds)")
    return SampleScript(segments=segments, speech=tuple(SpeechSpan(a, b) for a, b in speech), seed=seed,
                        width=width, height=height)


def default_class(seconds: float = 14.0) -> list[Member]:
    """A teacher and three students with different presence, attention, speech and start times.

    * ``teacher`` (mp4) faces the camera and speaks at 0.5-3.5 s and 8-9.5 s of class time;
    * ``s1`` looks away from 6 to 10 s and answers at 5.5-7.5 s (2 s after the teacher stopped);
    * ``s2`` (mp4, Grace Hopper mirrored) comes into frame at 3 s and speaks at 11-12.5 s (1.5 s wait);
    * ``s3`` (astronaut mirrored) starts 4 s into the class (its container says so; the manifest
      leaves its offset out), leaves the frame from 4 to 7 s of its recording, then looks away; silent.
    """
    d = seconds
    late = 4.0
    return [
        Member("teacher", script(d, [(0, d, "frontal")], [(0.5, 3.5), (8.0, 9.5)], seed=11),
               role="teacher", photo="grace_hopper", suffix=".mp4"),
        Member("s1", script(d, [(0, 6, "frontal"), (6, 10, "away"), (10, d, "frontal")], [(5.5, 7.5)], seed=12),
               photo="astronaut"),
        Member("s2", script(d, [(0, 3, "empty"), (3, d, "frontal")], [(11.0, 12.5)], seed=13),
               photo="grace_hopper", mirror=True, suffix=".mp4"),
        Member("s3", script(d - late, [(0, 4, "frontal"), (4, 7, "empty"), (7, d - late, "away")], seed=14),
               photo="astronaut", mirror=True, offset_s=late, manifest_offset=False),
    ]


def class_time_script(member: Member, duration_s: float) -> SampleScript:
    """The member's script shifted to class time and padded with "nobody there" to ``duration_s``."""
    s, o = member.script, member.offset_s
    segments: list[Segment] = []
    if o > 0:
        segments.append(Segment(0.0, o, "empty"))
    segments += [Segment(seg.start + o, seg.end + o, seg.visual) for seg in s.segments]
    end = o + s.duration_s
    if duration_s > end + 1e-9:
        segments.append(Segment(end, duration_s, "empty"))
    speech = tuple(SpeechSpan(sp.start + o, sp.end + o) for sp in s.speech)
    return SampleScript(segments=tuple(segments), speech=speech, fps=s.fps, width=s.width, height=s.height)


def class_truth(members: Sequence[Member]) -> ClassTruth:
    """Every member's truth on class time (the class lasts until the last recording ends)."""
    duration = max(m.offset_s + m.script.duration_s for m in members)
    rows = {m.id: truth_timeline(class_time_script(m, duration)) for m in members}
    return ClassTruth(duration_s=duration, rows=rows)


def write_class(
    folder: Path, members: Sequence[Member], *, session: str = "class", manifest: str | None = "manifest.json",
) -> ClassTruth:
    """Encode every member's recording into ``folder`` (and a manifest naming them); the class-time truth."""
    folder.mkdir(parents=True, exist_ok=True)
    for m in members:
        image = photos.photo(m.photo)
        if m.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        write_sample(folder / m.file, script=m.script, photo=image, start_s=m.offset_s if m.stamp_start else 0.0)
    if manifest is not None:
        write_manifest(folder / manifest, members, session=session)
    return class_truth(members)


def write_manifest(path: Path, members: Sequence[Member], *, session: str, folder: str = "") -> Path:
    """A manifest for ``members`` (``folder``: where the files lie, relative to the manifest)."""
    entries: list[dict[str, object]] = []
    for m in members:
        entry: dict[str, object] = {"id": m.id, "role": m.role, "file": f"{folder}{m.file}"}
        if m.manifest_offset:
            entry["offset_s"] = m.offset_s
        entries.append(entry)
    path.write_text(json.dumps({"session": session, "participants": entries}, indent=2) + "\n")
    return path
