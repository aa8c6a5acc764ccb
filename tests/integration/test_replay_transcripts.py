"""The report contract of ``classpulse replay --transcripts`` (real process, real models, espeak-ng speech).

With ``--transcripts``: ``transcript`` lists ``{participant, start, end, text}`` (seconds of media) and
``summary.participants[p]`` has ``words_spoken`` and ``questions``. Without it: the same counts, no
``transcript`` key, and no text anywhere in the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.testkit.clips import write_sample
from shared.testkit.script import default_script
from shared.testkit.speech import SPEECH_TEXT
from shared.text import words

pytestmark = pytest.mark.integration


def _replay(clip: Path, out: Path, *flags: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(clip), "--out", str(out), "--no-progress", *flags],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speech segments transcribed" in proc.stdout
    doc: dict[str, object] = json.loads((out / "report.json").read_text())
    return doc


def test_replay_with_and_without_transcripts(tmp_path: Path) -> None:
    clip = tmp_path / "lesson.mp4"
    write_sample(clip, script=default_script(12.0))
    with_text = _replay(clip, tmp_path / "with", "--transcripts")
    without = _replay(clip, tmp_path / "without")

    transcript = with_text["transcript"]
    assert isinstance(transcript, list) and transcript
    duration = float(with_text["session"]["duration_s"])  # type: ignore[index]
    for line in transcript:
        assert set(line) == {"participant", "start", "end", "text"}
        assert line["participant"] == "p1"
        assert 0.0 <= line["start"] < line["end"] <= duration + 0.05
        assert line["text"].strip()
    assert "today we look at how" in SPEECH_TEXT.lower()
    starts = [line["start"] for line in transcript]
    assert starts == sorted(starts)
    said = " ".join(line["text"] for line in transcript).lower()
    assert "today we look at how" in said, said  # each span starts the espeak text again: SPEECH_TEXT

    p_with = with_text["summary"]["participants"]["p1"]  # type: ignore[index]
    p_without = without["summary"]["participants"]["p1"]  # type: ignore[index]
    assert isinstance(p_with["words_spoken"], int) and isinstance(p_with["questions"], int)
    assert p_with["words_spoken"] == sum(words(line["text"]) for line in transcript) > 5
    assert p_without["words_spoken"] == p_with["words_spoken"]
    assert p_without["questions"] == p_with["questions"] == 0  # the sample says no question

    assert "transcript" not in without
    assert "today" not in (tmp_path / "without" / "report.json").read_text().lower()

    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(clip), "--out", str(tmp_path / "bad"), "--no-progress"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "CLASSPULSE_TRANSCRIBE_MODEL_DIR": str(tmp_path / "no-model")},
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: no CTranslate2 Whisper model in {tmp_path / 'no-model'} (missing model.bin, config.json); "
        "set CLASSPULSE_TRANSCRIBE_MODEL_DIR to a model folder, or leave it empty for the shipped tiny.en"
    ]


def test_transcripts_need_transcription_enabled(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(tmp_path / "x.mp4"), "--transcripts"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={"CLASSPULSE_TRANSCRIBE_ENABLED": "false", "PATH": "/usr/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --transcripts needs transcription; unset CLASSPULSE_TRANSCRIBE_ENABLED=false"
    ]
