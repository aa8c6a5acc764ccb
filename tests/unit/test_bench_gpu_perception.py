"""``bench/gpu_perception.py --dry-run``: every step of the GPU benchmark, tiny, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import gpu_perception

pytestmark = pytest.mark.unit


def test_dry_run_reports_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert gpu_perception.main(["--dry-run", "--out", str(tmp_path / "r.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["dry_run"] is True and result["device"] == "cpu"
    agree = result["agreement"]
    assert agree["meshed"] == agree["frames"] == 2
    assert agree["max_px_vs_cpu_torch"] == 0.0 and agree["median_err_vs_mediapipe"] < 0.03
    speed = result["batched_vs_batch1"]
    assert speed["batch1_fps"] > 0 and speed["batched_fps"] > 0
    steps = result["capacity"]["steps"]
    assert [s["students"] for s in steps][:1] == [1] and all(s["p95_ms"] > 0 for s in steps)


def test_without_cuda_it_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        return  # a GPU machine runs the real benchmark instead
    assert gpu_perception.main([]) == 2
    assert capsys.readouterr().err.strip() == "error: no CUDA device; run with --dry-run to check the script on CPU"
