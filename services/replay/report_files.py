"""Writing a replay report: ``report.json`` (the public contract), ``timeline.csv`` and ``report.html``."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.contracts.report import Report, TimelineRow

CSV_COLUMNS = ("t", "participant", "present", "attentive", "speaking", "hand_raised", "engagement", "confidence")


@dataclass(frozen=True)
class ReportPaths:
    """Where one report's files were written."""

    json: Path
    csv: Path
    html: Path


def timeline_csv(rows: list[TimelineRow]) -> str:
    """The timeline as CSV (booleans as ``true``/``false``, pandas reads them as bool)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                f"{r.t:g}",
                r.participant,
                *("true" if v else "false" for v in (r.present, r.attentive, r.speaking, r.hand_raised)),
                f"{r.engagement:.4f}",
                f"{r.confidence:.4f}",
            ]
        )
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
