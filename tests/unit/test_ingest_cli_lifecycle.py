"""Lifecycle events in order (in-memory event bus) and the ingest commands' error paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.cli import main
from services.ingest.lifecycle import LifecycleReporter, PresenceMonitor
from shared.contracts.timing import wall_clock
from shared.contracts.topics import LIFECYCLE
from shared.transport.memory import MemoryEventBus

pytestmark = pytest.mark.unit


async def test_reporter_sends_joined_initial_state_changes_and_left() -> None:
    bus = MemoryEventBus()
    monitor = PresenceMonitor(
        camera_off_after_s=0.3, mic_muted_after_s=0.3, has_video=True, has_audio=False, now=wall_clock()
    )
    reporter = LifecycleReporter(
        bus=bus, session="s", participant="p", role="teacher", resource="r1", monitor=monitor
    )
    reporter.start()
    for _ in range(20):  # frames keep the camera on for a while
        monitor.video_frame(wall_clock(), black=False)
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.8)  # then nothing: camera_off
    await reporter.close()
    events = [LIFECYCLE.model.model_validate_json(v) for _, v in bus.records(LIFECYCLE.name)]
    assert [e.kind for e in events] == ["joined", "mic_muted", "camera_off", "left"]
    assert [e.event_id for e in events] == [f"s/p/r1/{i}" for i in range(4)]
    assert all(e.session == "s" and e.role == "teacher" for e in events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)


async def test_reporter_that_never_joined_sends_nothing() -> None:
    bus = MemoryEventBus()
    monitor = PresenceMonitor(camera_off_after_s=1, mic_muted_after_s=1, has_video=True, has_audio=True, now=0.0)
    reporter = LifecycleReporter(bus=bus, session="s", participant="p", role="student", resource="r", monitor=monitor)
    await reporter.close()
    assert bus.records(LIFECYCLE.name) == []


def test_simulate_with_a_missing_file_fails_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["simulate", "--session", "s", "--students", "1", "--media", str(tmp_path / "nope.webm")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "no such file" in err and "Traceback" not in err


def test_simulate_with_a_non_media_file_fails_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.webm"
    notes.write_text("not a video\n" * 100)
    code = main(["simulate", "--session", "s", "--students", "2", "--media", str(notes)])
    err = capsys.readouterr().err
    assert code == 1 and "cannot open" in err and err.count("\n") == 1


def test_ingest_rejects_an_unknown_setting(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSPULSE_INGEST_ANALYSIS_FPSS", "5")
    assert main(["ingest", "--port", "0"]) == 2
    assert "CLASSPULSE_INGEST_ANALYSIS_FPS" in capsys.readouterr().err


def test_ingest_rejects_an_out_of_range_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLASSPULSE_INGEST_ANALYSIS_FPS", "500")
    assert main(["ingest", "--port", "0"]) == 2
    assert "CLASSPULSE_INGEST_ANALYSIS_FPS=" in capsys.readouterr().err
