"""``report.html``: summary tables and plots as inline SVG (matplotlib), readable offline, no CDN.

Every report has the tables, the engagement plot and the talk-time bars; a report with
several participants adds the class heatmap (one row per participant, one cell per second:
not observed / absent / present / attentive, with a bar where they speak), which stays
readable for a class of 30; the per-signal strips are drawn for up to ``STRIPS_MAX``
participants (past that they would be taller than the page; the rows are in timeline.csv).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from services.replay.report_gallery_html import attribution_rows, tile_cells, tiles_plot
from shared.contracts.report import QuestionItem, Report, TimelineRow
from shared.signals import FLAG_NAMES

_PALETTE = ("#2b8a3e", "#1c7ed6", "#e8590c", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d")
_STRIPS = tuple((name, _PALETTE[i % len(_PALETTE)]) for i, name in enumerate(FLAG_NAMES))
"""One strip per true/false signal of the registry, each in its own colour."""
_ROLE_COLOUR = {"student": "#1c7ed6", "teacher": "#e8590c"}
STRIPS_MAX = 6
"""Participants up to which the per-signal strips are drawn."""
INDIVIDUAL_LINES_MAX = 8
"""Participants up to which the engagement plot colours and labels each one (past it: thin grey lines)."""
HEATMAP_STATES = (
    ("not observed", "#f8f9fa"),
    ("absent", "#adb5bd"),
    ("present, not attentive", "#ffd8a8"),
    ("attentive", "#4dabf7"),
)
"""Cell colours of the class heatmap, by state index."""
SPEAKING_COLOUR = "#343a40"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#212529;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dee2e6}
.meta{color:#495057} table{border-collapse:collapse;margin:.5rem 0} td,th{padding:.3rem .7rem;
border-bottom:1px solid #e9ecef;text-align:right} th:first-child,td:first-child{text-align:left}
figure{margin:1rem 0} figure svg{max-width:100%;height:auto} .warn{background:#fff3bf;padding:.5rem 1rem;
border-left:4px solid #f59f00} .note{color:#868e96;font-size:.9rem}
"""


def _by_participant(rows: list[TimelineRow]) -> dict[str, list[TimelineRow]]:
    out: dict[str, list[TimelineRow]] = {}
    for r in rows:
        out.setdefault(r.participant, []).append(r)
    return out


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _runs(rows: list[TimelineRow], signal: str) -> Iterator[tuple[float, float]]:
    """(start, length) of every run of seconds where ``signal`` is true."""
    start: float | None = None
    last = 0.0
    for r in rows:
        on = bool(getattr(r, signal))
        if on and start is None:
            start = r.t
        if not on and start is not None:
            yield start, r.t - start
            start = None
        last = r.t + 1
    if start is not None:
        yield start, last - start


def observed(row: TimelineRow) -> bool:
    """Whether anything was observed in this second (a second without events reads all false, confidence 0)."""
    return row.confidence > 0.0 or row.present or row.speaking or row.engagement > 0.0


@dataclass(frozen=True)
class ClassSecond:
    """The class's engagement in one second: over the students observed in it."""

    t: float
    mean: float
    p10: float
    p90: float
    observed: int


def class_engagement(report: Report) -> list[ClassSecond]:
    """The class engagement timeline: per second, mean/p10/p90 of the observed students' engagement
    (everyone's when there is no student); seconds where nobody was observed are left out."""
    roles = {p.id: p.role for p in report.participants}
    students = {pid for pid, role in roles.items() if role == "student"} or set(roles)
    by_t: dict[float, list[float]] = {}
    for r in report.timeline:
        if (r.participant in students or r.participant not in roles) and observed(r):
            by_t.setdefault(r.t, []).append(r.engagement)
    out = []
    for t in sorted(by_t):
        xs = np.asarray(by_t[t])
        out.append(ClassSecond(t=t, mean=float(xs.mean()), p10=float(np.percentile(xs, 10)),
                               p90=float(np.percentile(xs, 90)), observed=len(xs)))
    return out


def _time_label(report: Report) -> str:
    return "session time (s)" if len(report.participants) > 1 else "media time (s)"


def engagement_plot(report: Report) -> str:
    per = _by_participant(report.timeline)
    fig = Figure(figsize=(10, 3.2))
    ax: Axes = fig.add_subplot()
    many = len(per) > INDIVIDUAL_LINES_MAX
    for pid, rows in per.items():
        ys = [r.engagement if observed(r) else math.nan for r in rows]  # a gap where nothing was observed
        xs = [r.t + 0.5 for r in rows]
        if many:
            ax.plot(xs, ys, linewidth=0.6, color="#adb5bd")
        else:
            ax.plot(xs, ys, linewidth=1.2, label=pid)
    klass = class_engagement(report) if len(per) > 1 else []
    if klass:
        xs = [c.t + 0.5 for c in klass]
        if many:
            ax.fill_between(xs, [c.p10 for c in klass], [c.p90 for c in klass], color="#495057", alpha=0.2,
                            linewidth=0, label="students p10-p90")
        ax.plot(xs, [c.mean for c in klass], color="black", linewidth=2.0, linestyle="--",
                label="class mean (students observed)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(report.session.duration_s, 1.0))
    ax.set_xlabel(_time_label(report))
    ax.set_ylabel("engagement (mean of each second)")
    ax.grid(alpha=0.3)
    if per:
        handles = len(ax.get_legend_handles_labels()[0])
        if handles:
            ax.legend(loc="upper right", fontsize=8, ncols=min(4, handles))
    return _svg(fig)


def heatmap_states(report: Report) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Participant order (teachers first, then as listed), the state of each (participant, second)
    as an index of :data:`HEATMAP_STATES`, and whether they spoke in it."""
    per = _by_participant(report.timeline)
    listed = [p.id for p in report.participants if p.id in per] + [pid for pid in per
                                                                   if pid not in {p.id for p in report.participants}]
    roles = {p.id: p.role for p in report.participants}
    order = sorted(listed, key=lambda pid: (roles.get(pid) != "teacher", listed.index(pid)))
    seconds = max((len(rows) for rows in per.values()), default=0)
    states = np.zeros((len(order), seconds), np.int8)
    speaking = np.zeros((len(order), seconds), bool)
    for i, pid in enumerate(order):
        for r in per[pid]:
            j = int(r.t)
            if j >= seconds:
                continue
            states[i, j] = 0 if not observed(r) else 3 if r.attentive else 2 if r.present else 1
            speaking[i, j] = r.speaking
    return order, states, speaking


def heatmap_plot(report: Report) -> str:
    """Participants x seconds: state colour per cell, a dark bar in the cell's lower part while speaking."""
    order, states, speaking = heatmap_states(report)
    n, seconds = states.shape
    roles = {p.id: p.role for p in report.participants}
    fig = Figure(figsize=(10, 1.3 + 0.26 * max(n, 1)))
    ax: Axes = fig.add_subplot()
    cmap = ListedColormap([c for _, c in HEATMAP_STATES])
    norm = BoundaryNorm(np.arange(len(HEATMAP_STATES) + 1) - 0.5, cmap.N)
    ax.imshow(states, cmap=cmap, norm=norm, aspect="auto", interpolation="none",
              extent=(0, seconds, n, 0))
    for i in range(n):
        runs = []
        start: int | None = None
        for j in range(seconds + 1):
            on = j < seconds and bool(speaking[i, j])
            if on and start is None:
                start = j
            elif not on and start is not None:
                runs.append((start, j - start))
                start = None
        if runs:
            ax.broken_barh(runs, (i + 0.62, 0.28), facecolors=SPEAKING_COLOUR)
    for i in range(1, n):
        ax.axhline(i, color="white", linewidth=1.0)
    labels = [f"{pid} (teacher)" if roles.get(pid) == "teacher" else pid for pid in order]
    ax.set_yticks([i + 0.5 for i in range(n)], labels, fontsize=8 if n <= 40 else 6)
    ax.set_ylim(n, 0)
    ax.set_xlim(0, max(seconds, 1))
    ax.set_xlabel(_time_label(report))
    ax.tick_params(axis="y", length=0)
    handles = [Patch(facecolor=c, edgecolor="#868e96", linewidth=0.5, label=name) for name, c in HEATMAP_STATES]
    handles.append(Patch(facecolor=SPEAKING_COLOUR, label="speaking (bar)"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(handles), fontsize=8,
              frameon=False, handlelength=1.2, borderaxespad=0.2)
    return _svg(fig)


def strips_plot(report: Report) -> str:
    per = _by_participant(report.timeline)
    lanes = [(pid, sig, colour) for pid in per for sig, colour in _STRIPS]
    fig = Figure(figsize=(10, 0.8 + 0.28 * len(lanes)))
    ax: Axes = fig.add_subplot()
    labels = []
    for i, (pid, sig, colour) in enumerate(lanes):
        y = len(lanes) - 1 - i
        ax.broken_barh(list(_runs(per[pid], sig)), (y + 0.15, 0.7), facecolors=colour)
        labels.append((y + 0.5, f"{pid} · {sig.replace('_', ' ')}"))
    ax.set_yticks([y for y, _ in labels], [text for _, text in labels], fontsize=8)
    ax.set_ylim(0, max(1, len(lanes)))
    ax.set_xlim(0, max(report.session.duration_s, 1.0))
    ax.set_xlabel(_time_label(report))
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def talk_time_plot(report: Report) -> str:
    items = sorted(report.summary.participants.items(), key=lambda kv: kv[1].talk_time_s)
    fig = Figure(figsize=(10, 0.9 + 0.32 * max(1, len(items))))
    ax: Axes = fig.add_subplot()
    ys = list(range(len(items)))
    ax.barh(ys, [p.talk_time_s for _, p in items], color=[_ROLE_COLOUR[p.role] for _, p in items])
    ax.set_yticks(ys, [f"{pid} ({p.role})" for pid, p in items], fontsize=8)
    ax.set_xlabel("talk time (s)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def _summary_tables(report: Report) -> str:
    s = report.summary
    sources = {p.id: p.source for p in report.participants if p.source is not None}
    klass = bool(sources)
    gallery = report.gallery is not None
    head = (
        "<tr><th>participant</th><th>role</th><th>present</th><th>attentive</th><th>talk time</th>"
        "<th>turns</th><th>hand raises</th><th>engagement</th>"
        "<th>questions</th><th>chat</th><th>words spoken</th><th>on topic</th>"
        + ("<th>joined</th><th>recording</th>" if klass else "")
        + ("<th>tile</th><th>speech attributed</th>" if gallery else "") + "</tr>"
    )

    def text_cells(*counts: int) -> str:
        return "<td>—</td>" * len(counts) if gallery else "".join(f"<td>{n}</td>" for n in counts)

    def extra(pid: str, joined: float | None) -> str:
        if gallery:
            return tile_cells(report, pid)
        if not klass:
            return ""
        at = "—" if joined is None else f"{joined:.1f} s"
        return f"<td>{at}</td><td>{escape(sources.get(pid, ''))}</td>"

    body = "".join(
        f"<tr><td>{escape(pid)}</td><td>{p.role}</td><td>{p.present_ratio:.0%}</td><td>{p.attentive_ratio:.0%}</td>"
        f"<td>{p.talk_time_s:.1f} s</td><td>{p.turns}</td><td>{p.hand_raises}</td><td>{p.engagement_mean:.2f}</td>"
        f"{text_cells(p.questions, p.chat_messages, p.words_spoken)}<td>{_share(p.on_topic_ratio)}</td>"
        f"{extra(pid, p.joined_at)}</tr>"
        for pid, p in s.participants.items()
    )
    missing = [p for p in report.participants if p.id not in s.participants]  # nothing observed at all
    body += "".join(
        f'<tr class="unobserved"><td>{escape(p.id)}</td><td>{p.role}</td><td colspan="10">not observed</td>'
        f"{extra(p.id, None)}</tr>"
        for p in missing
    )
    wait = "—" if s.mean_wait_time_s is None else f"{s.mean_wait_time_s:.1f} s"
    latency = "—" if s.response_latency_s is None else f"{s.response_latency_s:.1f} s"
    teachers = sum(1 for p in report.participants if p.role == "teacher")
    people = f"{len(report.participants)}" + (f" ({teachers} teacher{'s' if teachers > 1 else ''})" if teachers else "")
    table = (
        f"<tr><td>participants</td><td>{people}</td></tr>"
        f"<tr><td>duration</td><td>{report.session.duration_s:.1f} s</td></tr>"
        f"<tr><td>engagement (mean)</td><td>{s.engagement_mean:.2f}</td></tr>"
        f"<tr><td>attentive (share)</td><td>{s.attentive_ratio:.0%}</td></tr>"
        f"<tr><td>teacher talk share</td><td>{s.teacher_talk_share:.0%}</td></tr>"
        f"<tr><td>talk equity (Gini, 0 = equal)</td><td>{s.talk_equity_gini:.2f}</td></tr>"
        f"<tr><td>hand-raise equity (Gini)</td><td>{s.hand_equity_gini:.2f}</td></tr>"
        f"<tr><td>mean wait time</td><td>{wait}</td></tr>"
        f"<tr><td>alerts raised</td><td>{s.alerts_raised}</td></tr>"
        f"<tr><td>questions by students / teacher</td><td>{s.questions_students} / {s.questions_teacher}</td></tr>"
        f"<tr><td>teacher questions answered</td><td>{s.teacher_questions_answered}</td></tr>"
        f"<tr><td>teacher question → first student response (median)</td><td>{latency}</td></tr>"
        f"<tr><td>participation equity, voice + chat (Gini)</td><td>{s.participation_equity_gini:.2f}</td></tr>"
        + attribution_rows(report)
    )
    note = ('<p class="note" id="gallery-speech-note">Questions, chat and words spoken: — (not counted: a '
            "gallery's one mixed audio track is not transcribed, and chat is not merged into a gallery replay).</p>"
            ) if gallery else ""
    return (
        f'<h2>Participants</h2><table id="participants">{head}{body}</table>{note}'
        f'<h2>Class</h2><table id="class">{table}</table>{_questions(report)}'
    )


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _response(q: QuestionItem) -> str:
    if q.response_s is None:
        return "—"
    return f"{q.response_s:.1f} s ({escape(q.responder or '')})"


def _questions(report: Report) -> str:
    if not report.questions:
        return ""
    rows = "".join(
        f"<tr><td>{q.t:.1f} s</td><td>{escape(q.participant)}</td><td>{q.role}</td><td>{q.source}</td>"
        f"<td>{escape(q.text) if q.text is not None else '<i>text not kept</i>'}</td>"
        f"<td>{'yes' if q.answered else 'no'}</td>"
        f"<td>{_response(q)}</td></tr>"
        for q in report.questions
    )
    return ('<h2>Questions</h2><table id="questions"><tr><th>at</th><th>who</th><th>role</th><th>via</th>'
            f"<th>question</th><th>answered</th><th>first response</th></tr>{rows}</table>")


def render_html(report: Report) -> str:
    """The whole page as one self-contained HTML string."""
    people = len(_by_participant(report.timeline))
    with rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "classpulse"}):
        plots = {}
        if report.gallery is not None:
            plots["tiles"] = ("Gallery tiles: who is where in the frame", tiles_plot(report, _svg))
        plots["engagement"] = ("Engagement over time", engagement_plot(report))
        if people > 1:
            plots["heatmap"] = ("Class heatmap: who was there, attentive and speaking, second by second",
                                heatmap_plot(report))
        if people <= STRIPS_MAX:
            plots["strips"] = ("Presence, attention, speaking and hand raised per second", strips_plot(report))
        plots["talk-time"] = ("Talk time", talk_time_plot(report))
    warnings = "".join(f'<p class="warn">{escape(w)}</p>' for w in report.warnings)
    figures = "".join(
        f'<h2>{title}</h2><figure id="plot-{key}" class="plot">{svg}</figure>' for key, (title, svg) in plots.items()
    )
    session = report.session
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>ClassPulse report · {escape(session.id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>ClassPulse report · {escape(session.id)}</h1>"
        f'<p class="meta">source <code>{escape(session.source)}</code> · {session.duration_s:.1f} s of media · '
        f"{len(report.participants)} participant(s)</p>"
        f'<div id="warnings">{warnings}</div>'
        f"{_summary_tables(report)}{figures}"
        '<p class="note">Behaviour signals only (presence, attention to the screen, voice activity, hand raised); '
        "ClassPulse never infers emotion. Per-second rows are majority votes over ~5 analysis steps; "
        "the same data is in report.json and timeline.csv.</p></body></html>\n"
    )
