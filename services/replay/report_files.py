"""Writing a replay report: ``report.json`` (the public contract), ``timeline.csv`` and ``report.html``."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.contracts.report import Report, TimelineRow
from shared.signals import OUTPUTS, OutputSignal

CSV_COLUMNS = ("t", "participant", *(s.name for s in OUTPUTS))
"""The second and participant, then every behaviour signal of the registry in its order."""


@dataclass(frozen=True)
class ReportPaths:
    """Where one report's files were written."""

    json: Path
    csv: Path
    html: Path


def _cell(signal: OutputSignal, value: bool | float) -> str:
    if signal.kind == "flag":
        return "true" if value else "false"
    return f"{value:.4f}"


def timeline_csv(rows: list[TimelineRow]) -> str:
    """The timeline as CSV (flags as ``true``/``false``, pandas reads them as bool; levels to 4 decimals)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([f"{r.t:g}", r.participant, *(_cell(s, getattr(r, s.name)) for s in OUTPUTS)])
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, so a reader never sees half a report."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Report, out_dir: Path) -> ReportPaths:
    """Write all three files into ``out_dir`` (created if needed)."""
    from services.replay.report_html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(json=out_dir / "report.json", csv=out_dir / "timeline.csv", html=out_dir / "report.html")
    _write_atomic(paths.json, report.model_dump_json(indent=2) + "\n")
    _write_atomic(paths.csv, timeline_csv(report.timeline))
    _write_atomic(paths.html, render_html(report))
    return paths
