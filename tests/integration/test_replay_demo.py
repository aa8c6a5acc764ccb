"""``classpulse demo`` end to end in a real process: sample made, replayed, report written, agreement printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_writes_a_report_and_says_where(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--seconds", "12", "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"open {tmp_path / 'report.html'} in a browser" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr[-2000:]  # no native chatter, no warnings
    scores = dict(re.findall(r"(present|attentive|speaking) (\d\.\d\d)", proc.stdout))
    assert set(scores) == {"present", "attentive", "speaking"}
    assert all(float(v) >= 0.9 for v in scores.values()), proc.stdout
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["session"] == {"id": "demo", "source": "sample.mp4", "duration_s": pytest.approx(12.0, abs=0.25)}
    assert len(doc["timeline"]) == 12
    assert (tmp_path / "sample.mp4").stat().st_size > 10_000
    assert "<svg" in (tmp_path / "report.html").read_text()
