"""Class replay inputs: a folder (ids from file names, ``--teacher``) and a manifest.json; bad input
exits 2 with one ``error:`` line naming the file or field and what to do; default offsets from the
containers' start times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from services.replay.class_inputs import (
    ClassInputError,
    container_offsets,
    container_start,
    from_folder,
    from_manifest,
    is_class_input,
    leave_out,
)
from shared.testkit.clips import make_clip, write_sample
from shared.testkit.script import default_script

pytestmark = pytest.mark.unit


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return folder


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(["replay", *argv, "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _manifest(folder: Path, doc: object, name: str = "manifest.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# -- folder ----------------------------------------------------------------------------------


def test_folder_ids_from_stems_in_name_order_and_teacher(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "lesson", "zoe.webm", "amir.mp4", "Ms Lee.mkv", "notes.txt", ".hidden.mp4",
                    "manifest.json")
    (folder / "sub.mp4").mkdir()  # a folder with a media suffix is not a recording
    spec = from_folder(folder, teacher="Ms Lee")
    assert [(t.participant, t.role, t.source) for t in spec.tracks] == [
        ("Ms Lee", "teacher", "Ms Lee.mkv"), ("amir", "student", "amir.mp4"), ("zoe", "student", "zoe.webm"),
    ]
    assert all(t.offset_s is None and Path(t.location).parent == folder for t in spec.tracks)
    assert spec.session is None and spec.source == str(folder)
    assert is_class_input(str(folder)) and is_class_input(str(tmp_path / "m.json"))
    assert not is_class_input(str(folder / "zoe.webm")) and not is_class_input("https://x/y.json")


def test_folder_without_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _touch(tmp_path / "empty", "readme.md")
    line = _one_error_line(capsys, [str(folder)])
    assert str(folder) in line and "has no recordings" in line and "manifest.json" in line


def test_folder_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _touch(tmp_path / "dup", "ana.mp4", "ana.webm", "ben.mp4")
    line = _one_error_line(capsys, [str(folder)])
    assert "ana.mp4 and ana.webm both give participant id 'ana'" in line and "rename one" in line


def test_folder_unknown_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _touch(tmp_path / "c", "ana.mp4", "ben.mp4")
    line = _one_error_line(capsys, [str(folder), "--teacher", "carla"])
    assert "--teacher carla matches no recording" in line and "ids: ana, ben" in line


def test_single_person_flags_are_refused_in_class_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _touch(tmp_path / "c", "ana.mp4")
    assert "--participant/--role" in _one_error_line(capsys, [str(folder), "--participant", "x"])
    assert "--participant/--role" in _one_error_line(capsys, [str(folder), "--role", "teacher"])


def test_teacher_flag_with_one_recording_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = _touch(tmp_path, "a.mp4") / "a.mp4"
    assert "--role teacher" in _one_error_line(capsys, [str(clip), "--teacher", "a"])


# -- manifest --------------------------------------------------------------------------------


def test_manifest_resolves_files_against_its_folder(tmp_path: Path) -> None:
    _touch(tmp_path / "media", "t.mp4", "a.webm")
    other = _touch(tmp_path / "elsewhere", "b.mkv") / "b.mkv"
    path = _manifest(tmp_path / "m", {"session": "math-7", "participants": [
        {"id": "teacher", "role": "teacher", "file": "../media/t.mp4", "offset_s": 0},
        {"id": "ana", "file": "../media/a.webm", "offset_s": 12.5},
        {"id": "ben", "role": "student", "file": str(other)},
    ]})
    spec = from_manifest(path)
    assert spec.session == "math-7" and spec.source == str(path)
    got = [(t.participant, t.role, t.source, t.offset_s) for t in spec.tracks]
    assert got == [("teacher", "teacher", "../media/t.mp4", 0.0), ("ana", "student", "../media/a.webm", 12.5),
                   ("ben", "student", str(other), None)]
    assert Path(spec.tracks[0].location).resolve() == (tmp_path / "media" / "t.mp4").resolve()
    assert spec.tracks[2].location == str(other)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ('{"session": "x", "participants": [', "manifest.json is not valid JSON (line 1, column"),
        ("[1, 2]", 'manifest.json: the manifest must be a JSON object ({"session": ..., "participants": [...]})'),
        ({"session": "x", "participants": ["a.mp4"]},
         "manifest.json: participants[0] must be a JSON object (id, role, file, offset_s, opt_out)"),
        ({"participants": [{"id": "a", "file": "a.mp4"}]}, "manifest.json: session is missing"),
        ({"session": "x", "participants": []}, "manifest.json: participants: list should have at least 1 item"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4"}, {"id": "b"}]},
         "manifest.json: participants[1].file is missing; each participant needs id and file"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4", "offset": 3}]},
         "manifest.json: participants[0].offset is not a known field; the fields are id, role, file, offset_s, "
         "opt_out"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4", "role": "prof"}]},
         "manifest.json: participants[0].role: input should be 'student' or 'teacher'"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4", "offset_s": -2}]},
         "manifest.json: participants[0].offset_s: input should be greater than or equal to 0"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4"}, {"id": "a", "file": "b.mp4"}]},
         "participant id 'a' appears twice (participants[0] and participants[1]); give each participant their own"),
        ({"session": "x", "participants": [{"id": "a", "file": "a.mp4"}, {"id": "b", "file": "gone.mp4"}]},
         "manifest.json: participants[1].file 'gone.mp4' does not exist (looked for"),
    ],
)
def test_bad_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: object, expected: str) -> None:
    _touch(tmp_path, "a.mp4", "b.mp4")
    path = _manifest(tmp_path, doc)
    line = _one_error_line(capsys, [str(path), "--out", str(tmp_path / "out")])
    assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_manifest_missing_and_teacher_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such file" in _one_error_line(capsys, [str(tmp_path / "nope.json")])
    _touch(tmp_path, "a.mp4")
    path = _manifest(tmp_path, {"session": "x", "participants": [{"id": "a", "file": "a.mp4"}]})
    assert '"role": "teacher"' in _one_error_line(capsys, [str(path), "--teacher", "a"])


def test_manifest_naming_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").mkdir()
    path = _manifest(tmp_path, {"session": "x", "participants": [{"id": "a", "file": "a.mp4"}]})
    with pytest.raises(ClassInputError, match=r"participants\[0\].file 'a.mp4' is a folder"):
        from_manifest(path)


def test_every_recording_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "a.mp4").write_text("not a video")
    (folder / "b.webm").write_bytes(b"")
    line = _one_error_line(capsys, [str(folder), "--out", str(tmp_path / "out")])
    assert f"no recording in {folder} could be analysed; the first: a.mp4 is not a media file" in line


# -- offsets ---------------------------------------------------------------------------------


def test_container_offsets_relative_to_the_earliest_track() -> None:
    assert container_offsets([10.0, 14.5, None, 12.0], [None, None, None, 3.0]) == [0.0, 4.5, 0.0, 3.0]
    assert container_offsets([None, None], [None, 2.0]) == [0.0, 2.0]


def test_container_start_of_a_recording_stamped_at_4_s(tmp_path: Path) -> None:
    late = tmp_path / "late.webm"
    write_sample(late, script=default_script(3.0), start_s=4.0)
    plain = tmp_path / "plain.mp4"
    make_clip(plain, seconds=3.0)
    start = container_start(str(late))
    assert start is not None and start == pytest.approx(4.0, abs=0.02)  # Opus pre-skip: a few ms earlier
    assert container_start(str(plain)) == 0.0
    assert container_start(str(tmp_path / "missing.mp4")) is None


def test_probe_of_a_late_webm_declares_its_length_not_its_end(tmp_path: Path) -> None:
    """Matroska declares the end timestamp (14 s for 10 s starting at 4 s): no false 'truncated' warning."""
    from services.ingest.sources.file import FileSource

    late = tmp_path / "late.webm"
    write_sample(late, script=default_script(3.0), start_s=4.0)
    source = FileSource(path=str(late), session="s", participant="p")
    info = source.probe()
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    messages = list(source)
    assert messages[0].media_time == pytest.approx(0.0, abs=0.05) and source.warnings == []


def test_opted_out_participants_are_left_out_before_anything_is_opened(tmp_path: Path) -> None:
    _touch(tmp_path, "t.mp4", "a.webm")
    path = _manifest(tmp_path, {"session": "s", "participants": [
        {"id": "teacher", "role": "teacher", "file": "t.mp4"},
        {"id": "ana", "file": "a.webm"},
        {"id": "ben", "file": "missing.mp4", "opt_out": True},  # never opened, not even checked
    ]})
    spec = from_manifest(path)
    assert [t.participant for t in spec.tracks] == ["teacher", "ana"] and spec.opted_out == ("ben",)
    kept, out = leave_out(spec, "ana")
    assert [t.participant for t in kept.tracks] == ["teacher"] and out == ["ana", "ben"]
    with pytest.raises(ClassInputError, match="--opt-out names zoe, not in this class"):
        leave_out(spec, "zoe")
    with pytest.raises(ClassInputError, match="every participant of this class opted out"):
        leave_out(spec, "teacher,ana")


def test_opt_out_is_refused_for_a_single_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _touch(tmp_path, "one.mp4")
    assert main(["replay", str(tmp_path / "one.mp4"), "--opt-out", "x", "--out", str(tmp_path / "r")]) != 0
    assert "--opt-out leaves participants out of a class replay" in capsys.readouterr().err
