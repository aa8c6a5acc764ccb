"""What a class replay analyses: a folder of per-participant recordings, or a ``manifest.json``.

* **Folder**: every media file directly in it (by suffix; hidden files, sub-folders and other
  files are left alone) is one participant, id = the file name's stem, in name order; all are
  students except the one named by ``--teacher ID``.
* **Manifest**: ``{"session": str, "participants": [{"id", "role", "file", "offset_s"}]}``;
  ``role`` (default ``student``) and ``offset_s`` are optional, ``file`` is relative to the
  manifest's folder (or absolute, or a URL PyAV opens). Unknown keys are rejected so that a
  typo (``"offset"``) is not silently ignored.

A track's **offset** is the session time at which its media time 0 lies. When the manifest
gives none (and always in folder mode) it is the container's start time relative to the
earliest start among the recordings (:func:`container_offsets`): recorders that stamp each
track with the class clock (LiveKit Egress, Jitsi, BigBlueButton do) line up by themselves.

Problems the user must fix raise :class:`ClassInputError` with one line naming the file or
field and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.events import Role

MEDIA_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ts", ".mts", ".flv", ".3gp",
    ".m4a", ".mp3", ".wav", ".ogg", ".oga", ".opus", ".aac", ".flac", ".weba",
})
"""File suffixes a folder replay takes as recordings."""
MAX_ID = 128
"""Longest participant id (the media contract's bound)."""
MANIFEST_FIELDS = "id, role, file, offset_s, opt_out"


class ClassInputError(Exception):
    """A folder or manifest that cannot be replayed; the message is one user-facing line."""


@dataclass(frozen=True)
class TrackSpec:
    """One participant's recording as the user described it."""

    participant: str
    role: Role
    location: str
    """Path (or URL) to open."""
    source: str
    """The file as given: its name in a folder, the manifest's ``file`` value."""
    offset_s: float | None
    """None: from the container's start time."""


@dataclass(frozen=True)
class ClassInput:
    """A whole class to replay."""

    source: str
    """The folder or manifest as given (the report's ``session.source``)."""
    session: str | None
    """The manifest's session id (a folder has none)."""
    tracks: list[TrackSpec]
    opted_out: tuple[str, ...] = ()
    """Participants the manifest marks ``"opt_out": true`` (left out of ``tracks``)."""


def is_class_input(location: str) -> bool:
    """A folder or a ``.json`` file (a manifest); anything else is one recording."""
    if "://" in location:
        return False
    path = Path(location)
    return path.is_dir() or path.suffix.lower() == ".json"


def load_class_input(location: str, *, teacher: str | None = None) -> ClassInput:
    """The folder's or manifest's tracks; raises :class:`ClassInputError`."""
    path = Path(location)
    if path.is_dir():
        return from_folder(path, given=location, teacher=teacher)
    if teacher is not None:
        raise ClassInputError(f"--teacher is for a folder of recordings; in {path.name} give the teacher "
                              '"role": "teacher"')
    return from_manifest(path, given=location)


# -- folder ----------------------------------------------------------------------------------


def from_folder(folder: Path, *, given: str | None = None, teacher: str | None = None) -> ClassInput:
    """One track per media file directly in ``folder``, id = file stem."""
    shown = given or str(folder)
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ClassInputError(f"cannot list {shown} ({exc.strerror}); check its permissions") from exc
    media = [p for p in entries if p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not media:
        raise ClassInputError(
            f"{shown} has no recordings (mp4, webm, mkv, mov, m4a, mp3, wav, ...); "
            "put one file per participant in it, or give a manifest.json"
        )
    seen: dict[str, Path] = {}
    for p in media:
        if p.stem in seen:
            raise ClassInputError(
                f"{shown}: {seen[p.stem].name} and {p.name} both give participant id {p.stem!r}; "
                "rename one (ids come from the file names)"
            )
        if len(p.stem) > MAX_ID:
            raise ClassInputError(f"{shown}: the file name {p.name} is too long for a participant id "
                                  f"(at most {MAX_ID} characters before the suffix); rename it")
        seen[p.stem] = p
    if teacher is not None and teacher not in seen:
        ids = ", ".join(list(seen)[:8]) + (", ..." if len(seen) > 8 else "")
        raise ClassInputError(f"--teacher {teacher} matches no recording in {shown} (ids: {ids}); "
                              "give the teacher's file name without its suffix")
    tracks = [
        TrackSpec(participant=p.stem, role="teacher" if p.stem == teacher else "student", location=str(p),
                  source=p.name, offset_s=None)
        for p in media
    ]
    return ClassInput(source=shown, session=None, tracks=tracks)


# -- manifest --------------------------------------------------------------------------------


class ManifestParticipant(BaseModel):
    """One entry of a manifest's ``participants``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID, description="Participant id in the report.")
    role: Role = Field(default="student", description="student or teacher.")
    file: str = Field(min_length=1, max_length=4096, description="Recording, relative to the manifest's folder.")
    offset_s: float | None = Field(
        default=None, ge=0.0, le=86_400.0,
        description="Session time at which this recording starts (default: its container start time).",
    )
    opt_out: bool = Field(default=False, description="The participant opted out: the recording is never analysed.")


class Manifest(BaseModel):
    """``manifest.json`` of a class replay."""

    model_config = ConfigDict(extra="forbid")

    session: str = Field(min_length=1, max_length=128, description="Session id of the report.")
    participants: list[ManifestParticipant] = Field(min_length=1, max_length=10_000)


def from_manifest(path: Path, *, given: str | None = None) -> ClassInput:
    """The manifest's tracks, files resolved against its folder."""
    shown = given or str(path)
    name = path.name
    if not path.exists():
        raise ClassInputError(f"{shown}: no such file; check the path and try again")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ClassInputError(f"{name} is not a UTF-8 text file; give a JSON manifest (see docs/replay.md)") from exc
    except OSError as exc:
        raise ClassInputError(f"{shown} cannot be read ({exc.strerror}); check its permissions") from exc
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClassInputError(
            f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            'fix it: {"session": ..., "participants": [{"id", "role", "file", "offset_s"}, ...]}'
        ) from exc
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as exc:
        raise ClassInputError(f"{name}: {_first_problem(exc)}") from exc
    first: dict[str, int] = {}
    for i, p in enumerate(manifest.participants):
        if p.id in first:
            raise ClassInputError(
                f"{name}: participant id {p.id!r} appears twice (participants[{first[p.id]}] and participants[{i}]); "
                "give each participant their own id"
            )
        first[p.id] = i
    base = path.parent
    tracks = []
    for i, p in enumerate(manifest.participants):
        if p.opt_out:
            continue  # never opened, not even checked
        location = p.file if "://" in p.file else str(base / p.file)
        if "://" not in p.file:
            target = Path(location)
            if not target.exists():
                raise ClassInputError(
                    f"{name}: participants[{i}].file {p.file!r} does not exist (looked for {target}); "
                    "fix the path (files are relative to the manifest's folder)"
                )
            if target.is_dir():
                raise ClassInputError(f"{name}: participants[{i}].file {p.file!r} is a folder; name a recording")
        tracks.append(TrackSpec(participant=p.id, role=p.role, location=location, source=p.file,
                                offset_s=p.offset_s))
    opted_out = tuple(p.id for p in manifest.participants if p.opt_out)
    return ClassInput(source=shown, session=manifest.session, tracks=tracks, opted_out=opted_out)


def _first_problem(exc: ValidationError) -> str:
    """The first validation error as ``participants[1].file: is missing ...`` (+ how many more)."""
    errors = exc.errors()
    e = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"]).lstrip(".")
    kind = e["type"]
    if kind == "missing":
        text = (f"{where} is missing; each participant needs id and file ({MANIFEST_FIELDS} are the fields)"
                if where.startswith("participants") else f"{where} is missing; a manifest has session and participants")
    elif kind in ("model_type", "dict_type"):
        text = f"{where or 'the manifest'} must be a JSON object"
        text += ' ({"session": ..., "participants": [...]})' if not where else f" ({MANIFEST_FIELDS})"
    elif kind == "extra_forbidden":
        fields = MANIFEST_FIELDS if where.startswith("participants") else "session, participants"
        text = f"{where} is not a known field; the fields are {fields}"
    else:
        text = f"{where or 'the manifest'}: {e['msg'][0].lower()}{e['msg'][1:]}"
        if not where:
            text += ' (expected {"session": ..., "participants": [...]})'
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


# -- offsets ---------------------------------------------------------------------------------


def container_start(location: str) -> float | None:
    """The container's start time in seconds (PyAV ``container.start_time``); None when unknown or unreadable."""
    import av

    try:
        with av.open(location, mode="r", timeout=10.0) as container:
            start = container.start_time
    except (av.error.FFmpegError, OSError):
        return None
    return start / 1_000_000 if start is not None else None


def container_offsets(starts: list[float | None], given: list[float | None]) -> list[float]:
    """Each track's offset: the given one, else its container start minus the earliest start (0 if unknown)."""
    known = [s for s in starts if s is not None]
    earliest = min(known, default=0.0)
    return [
        g if g is not None else (round(max(0.0, s - earliest), 6) if s is not None else 0.0)
        for s, g in zip(starts, given, strict=True)
    ]


def leave_out(spec: ClassInput, given: str | None) -> tuple[ClassInput, list[str]]:
    """``spec`` without the participants who opted out (``--opt-out a,b`` and the manifest's ``opt_out``)."""
    wanted = [p.strip() for p in (given or "").split(",") if p.strip()]
    known = {t.participant for t in spec.tracks} | set(spec.opted_out)
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise ClassInputError(f"--opt-out names {', '.join(unknown)}, not in this class ({', '.join(sorted(known))}); "
                              "give the ids the report would use")
    out = sorted(set(wanted) | set(spec.opted_out))
    tracks = [t for t in spec.tracks if t.participant not in out]
    if not tracks:
        raise ClassInputError("every participant of this class opted out; there is nothing to analyse")
    return ClassInput(source=spec.source, session=spec.session, tracks=tracks, opted_out=tuple(out)), out
