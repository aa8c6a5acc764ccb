"""File sources on real encoded clips (built from a real photo), and every bad-input error."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services.ingest.sources import FileSource, MediaSourceError
from shared.contracts.media import AudioChunk, VideoFrame
from shared.contracts.timing import wall_clock
from shared.testkit.clips import write_clip

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "webm": write_clip(folder / "a.webm", seconds=3, video="vp8"),
        "mp4": write_clip(folder / "b.mp4", seconds=3, video="h264", width=320, height=240),
        "audio": write_clip(folder / "c.mkv", seconds=2, video=None),
    }


def _source(path: Path, **kw: object) -> FileSource:
    return FileSource(path=str(path), session="sess", participant="alice", **kw)  # type: ignore[arg-type]


def test_probe_reports_container_facts(clips: dict[str, Path]) -> None:
    info = _source(clips["webm"]).probe()
    assert info.has_video and info.has_audio
    assert (info.width, info.height, info.fps) == (640, 480, 15.0)
    assert info.codecs == {"video": "vp8", "audio": "opus"}
    assert info.duration_s == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("kind", ["webm", "mp4"])
def test_iteration_yields_sampled_frames_and_chunks_in_media_time_order(clips: dict[str, Path], kind: str) -> None:
    source = _source(clips[kind], fps=5.0, frame_width=160, role="teacher")
    before = wall_clock()
    msgs = list(source)
    video = [m for m in msgs if isinstance(m, VideoFrame)]
    audio = [m for m in msgs if isinstance(m, AudioChunk)]
    assert len(video) == 15 and len(audio) == 6
    times = [m.media_time for m in msgs]
    assert times == sorted(times)
    assert [m.seq for m in video] == list(range(15)) and [m.seq for m in audio] == list(range(6))
    assert all(m.session == "sess" and m.participant == "alice" and m.role == "teacher" for m in msgs)
    assert (video[0].width, video[0].height) == (160, 120)
    assert video[0].image().std() > 10  # a real picture, not a blank frame
    assert len(audio[0].waveform()) == 8000 and audio[0].sample_rate == 16_000
    assert source.base_epoch is not None and source.base_epoch >= before
    for m in video:
        assert m.timing.capture_ts == pytest.approx(source.base_epoch + m.media_time)
        assert m.timing.stage("ingest") is not None
    assert source.warnings == []
    assert source.frames_decoded == 45  # every frame decoded, only 15 converted


def test_audio_only_file(clips: dict[str, Path]) -> None:
    msgs = list(_source(clips["audio"]))
    assert msgs and all(isinstance(m, AudioChunk) for m in msgs)
    assert len(msgs) == 4


async def test_stream_is_paced_in_real_time(clips: dict[str, Path]) -> None:
    source = _source(clips["audio"])
    start = time.monotonic()
    lags = []
    count = 0
    async for msg in source.stream():
        lags.append(wall_clock() - msg.timing.capture_ts)
        count += 1
    elapsed = time.monotonic() - start
    assert count == 4
    assert 1.8 <= elapsed <= 4.0  # a 2 s clip takes about 2 s
    assert max(lags) < 0.5 and min(lags) > -0.05  # capture time tracks the wall clock


async def test_stream_can_be_abandoned_early(clips: dict[str, Path]) -> None:
    source = _source(clips["webm"])
    async for _ in source.stream():
        break  # the worker thread stops; nothing hangs


def _error(path: Path | str) -> str:
    with pytest.raises(MediaSourceError) as info:
        list(FileSource(path=str(path), session="s", participant="p"))
    message = info.value.message
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_folder_empty_and_non_media_files(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.mp4")
    assert "is a folder" in _error(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "is empty" in _error(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("these are lecture notes, not a video\n" * 50)
    assert "not a media file" in _error(text)
    subtitles = tmp_path / "talk.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    assert "neither video nor audio" in _error(subtitles)


def test_truncated_mp4_without_index_is_a_clear_error(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov index sits at the end: gone
    message = _error(cut)
    assert "truncated" in message and "complete" in message


def test_truncated_webm_yields_what_it_can_with_a_warning(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["webm"].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    source = _source(cut)
    msgs = list(source)
    assert 0 < len([m for m in msgs if isinstance(m, VideoFrame)]) < 15
    assert source.warnings and "truncated" in source.warnings[-1]


def test_header_only_file_has_nothing_to_decode(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["webm"].read_bytes()
    cut = tmp_path / "head.webm"
    cut.write_bytes(data[:400])
    message = _error(cut)
    assert "head.webm" in message and "truncated" in message


def test_http_url_source(clips: dict[str, Path]) -> None:
    folder = str(clips["webm"].parent)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=folder, **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clips['webm'].name}"
        source = FileSource(path=url, session="s", participant="p")
        assert source.probe().has_video
        msgs = list(source)
        assert len([m for m in msgs if isinstance(m, VideoFrame)]) == 15
        missing = FileSource(path=url.replace("a.webm", "gone.webm"), session="s", participant="p")
        with pytest.raises(MediaSourceError, match="check the URL"):
            missing.probe()
    finally:
        server.shutdown()
        server.server_close()
