"""Bad input to ``classpulse replay``: non-zero exit, exactly one clear line on stderr, no traceback.

(Partial media — a truncated webm that still decodes — is analysed with a warning; that needs
the perception models and lives in tests/integration/test_replay_accuracy.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import main
from shared.testkit.clips import make_clip, truncate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    make_clip(path, seconds=4.0)
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(["replay", *argv, "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_non_media_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("these are my lesson notes, not a video\n" * 50)
    line = _one_error_line(capsys, [str(bad), "--out", str(tmp_path / "o")])
    assert "notes.mp4" in line and "not a media file" in line and "give a complete" in line
    assert not (tmp_path / "o" / "report.json").exists()


def test_truncated_mp4_without_its_index(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = truncate(clip, tmp_path / "cut.mp4", keep=0.5)  # PyAV writes the moov index at the end
    line = _one_error_line(capsys, [str(cut), "--out", str(tmp_path / "o")])
    assert "cut.mp4" in line and "truncated" in line


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_error_line(capsys, [str(tmp_path / "nope.webm")])
    assert "no such file" in line and "check the path" in line


def test_path_under_a_file_is_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("x")
    line = _one_error_line(capsys, [str(tmp_path / "a.txt" / "clip.mp4")])
    assert "no such file" in line


def test_folder_without_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a recording")
    line = _one_error_line(capsys, [str(tmp_path)])
    assert "has no recordings" in line and "one file per participant" in line


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.mkv").write_bytes(b"")
    line = _one_error_line(capsys, [str(tmp_path / "empty.mkv")])
    assert "empty" in line


def test_file_with_neither_video_nor_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n")
    subs = tmp_path / "subs.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(srt), str(subs)], check=True)
    line = _one_error_line(capsys, [str(subs)])
    assert "neither video nor audio" in line


def test_out_is_a_file(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("x")
    line = _one_error_line(capsys, [str(clip), "--out", str(tmp_path / "taken")])
    assert "is a file" in line


def test_no_input_and_kafka_without_session(capsys: pytest.CaptureFixture[str]) -> None:
    assert "give a recording" in _one_error_line(capsys, [])
    assert "--session" in _one_error_line(capsys, ["--from-kafka"])


def test_real_process_prints_only_the_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.webm"
    bad.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 300)  # an EBML magic followed by garbage
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: x.webm"), proc.stderr


def test_gallery_layout_bad_input(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "lesson"
    folder.mkdir()
    line = _one_error_line(capsys, [str(folder), "--layout", "gallery"])
    assert "is a folder or manifest; --layout gallery takes one gallery-view recording" in line
    line = _one_error_line(capsys, [str(clip), "--layout", "gallery", "--participant", "ana"])
    assert "in a gallery the ids are the tiles p1..pN" in line
    audio_only = tmp_path / "talk.webm"
    make_clip(audio_only, seconds=2.0, video=False)
    line = _one_error_line(capsys, [str(audio_only), "--layout", "gallery", "--out", str(tmp_path / "r")])
    assert line == ("error: talk.webm has no video track; a gallery replay needs the gallery's picture "
                    "(for audio only, replay it without --layout gallery)")
    line = _one_error_line(capsys, [str(clip), "--layout", "gallery", "--teacher", "p9", "--out", str(tmp_path / "r")])
    assert line.startswith("error: --teacher p9 is no tile of clip.mp4 (tiles: p1, row by row")
