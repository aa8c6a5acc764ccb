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


@pytest.mark.parametrize(("fmt", "kind"), [("PNG", "png"), ("GIF", "gif"), ("JPEG", "jpeg")])
def test_still_image_renamed_mp4_is_refused(
    fmt: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    still = tmp_path / "lesson.mp4"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(still, format=fmt)
    line = _one_error_line(capsys, [str(still), "--out", str(tmp_path / "o")])
    assert line == (
        f"error: lesson.mp4 is a still image ({kind}), not a recording; "
        "give a video or audio recording (mp4, webm, mkv)"
    )
    assert not (tmp_path / "o" / "report.json").exists()


def test_several_video_streams_are_named_in_one_warning(tmp_path: Path) -> None:
    import av
    import numpy as np

    from services.ingest.sources.file import FileSource
    from services.replay.files import _track_warnings

    path = tmp_path / "three.mkv"
    with av.open(str(path), "w") as out:
        streams = [out.add_stream("mpeg4", rate=5) for _ in range(3)]
        for s, (w, h) in zip(streams, [(64, 48), (32, 32), (48, 64)], strict=True):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(5):
            for s in streams:
                frame = av.VideoFrame.from_ndarray(np.full((s.height, s.width, 3), i * 40, np.uint8), format="rgb24")
                out.mux(s.encode(frame))
        for s in streams:
            out.mux(s.encode(None))
    info = FileSource(path=str(path), session="s", participant="p").probe()
    assert info.video_streams == 3
    (warning,) = [w for w in _track_warnings("three.mkv", info) if "video streams" in w]
    assert warning.startswith("three.mkv has 3 video streams: only the first (stream 0, 64x48) was analysed")


def test_an_unexpected_failure_is_one_line_without_exception_text(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.replay.files as files

    def broken(*_: object, **__: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'role'")

    monkeypatch.setattr(files, "replay_file", broken)
    code = main(["replay", str(clip), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: replay of {clip} failed unexpectedly")
    assert "AttributeError" not in err and "NoneType" not in err
