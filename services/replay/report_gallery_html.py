"""The gallery parts of ``report.html``: a map of the tiles (numbered boxes, no pixels) and the attribution.

No picture of the recording is stored anywhere: the map is the frame's outline with each
participant's tile box and id, so a reader can tell which tile ``p3`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from shared.contracts.report import Report

TILE_COLOUR = {"student": "#1c7ed6", "teacher": "#e8590c"}


def tile_cells(report: Report, pid: str) -> str:
    """The participants table's gallery cells of one participant: tile box and attributed speech."""
    p = next((q for q in report.participants if q.id == pid), None)
    if p is None or p.bbox is None:
        return "<td></td><td></td>"
    x, y, w, h = p.bbox
    a = p.speaking_attribution
    speech = "—" if a is None else f"{a.seconds_attributed:.1f} s" + (
        f" (+{a.seconds_unattributed:.1f} s unclear)" if a.seconds_unattributed else "")
    return f"<td>{w}×{h} at {x},{y}</td><td>{escape(speech)}</td>"


def attribution_rows(report: Report) -> str:
    """Rows of the class table on the speaker attribution (empty without a gallery or sound)."""
    g = report.gallery
    if g is None or g.attribution is None:
        return ""
    a = g.attribution
    share = a.attributed_s / a.voiced_s if a.voiced_s else 1.0
    return (
        f"<tr><td>speech attributed (mouth moves with the voice, {a.window_s:g} s window)</td>"
        f"<td>{a.attributed_s:.1f} of {a.voiced_s:.1f} s ({share:.0%})</td></tr>"
        f"<tr><td>unattributed: two mouths moved / none moved</td><td>{a.tied_s:.1f} s / {a.no_mouth_s:.1f} s</td></tr>"
    )


def tiles_plot(report: Report, svg: Callable[[Figure], str]) -> str:
    """The frame's outline with every participant's tile, numbered; ``svg`` turns a Figure into inline SVG."""
    g = report.gallery
    assert g is not None
    width, height = g.frame
    fig = Figure(figsize=(4.8, 4.8 * height / max(width, 1)))
    ax: Axes = fig.add_subplot()
    ax.add_patch(Rectangle((0, 0), width, height, facecolor="#f1f3f5", edgecolor="#495057", linewidth=1.0))
    for p in report.participants:
        if p.bbox is None:
            continue
        x, y, w, h = p.bbox
        colour = TILE_COLOUR.get(p.role, "#1c7ed6")
        ax.add_patch(Rectangle((x + 3, y + 3), w - 6, h - 6, facecolor=(*to_rgb(colour), 0.15), edgecolor=colour,
                               linewidth=1.2))
        label = f"{p.id} (teacher)" if p.role == "teacher" else p.id
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=10, color="#212529")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{width}×{height} frame, {g.tiles} tiles", fontsize=9)
    return svg(fig)
