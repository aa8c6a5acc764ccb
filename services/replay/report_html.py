"""``report.html``: summary tables and plots as inline SVG (matplotlib), readable offline, no CDN."""

from __future__ import annotations

import io
from collections.abc import Iterator
from html import escape

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from shared.contracts.report import Report, TimelineRow
from shared.signals import FLAG_NAMES

_PALETTE = ("#2b8a3e", "#1c7ed6", "#e8590c", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d")
_STRIPS = tuple((name, _PALETTE[i % len(_PALETTE)]) for i, name in enumerate(FLAG_NAMES))
"""One strip per true/false signal of the registry, each in its own colour."""
_ROLE_COLOUR = {"student": "#1c7ed6", "teacher": "#e8590c"}

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


def engagement_plot(report: Report) -> str:
    per = _by_participant(report.timeline)
    fig = Figure(figsize=(10, 3.2))
    ax: Axes = fig.add_subplot()
    for pid, rows in per.items():
        ax.plot([r.t + 0.5 for r in rows], [r.engagement for r in rows], linewidth=1.2, label=pid)
    roles = {p.id: p.role for p in report.participants}
    students = [rows for pid, rows in per.items() if roles.get(pid, "student") == "student"]
    if len(per) > 1 and students:
        n = min(len(rows) for rows in students)
        mean = [sum(rows[i].engagement for rows in students) / len(students) for i in range(n)]
        ax.plot([students[0][i].t + 0.5 for i in range(n)], mean, color="black", linewidth=2.0, linestyle="--",
                label="class mean (students)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(report.session.duration_s, 1.0))
    ax.set_xlabel("media time (s)")
    ax.set_ylabel("engagement (mean of each second)")
    ax.grid(alpha=0.3)
    if 0 < len(per) <= 12:
        ax.legend(loc="upper right", fontsize=8, ncols=min(4, len(per) + 1))
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
    ax.set_xlabel("media time (s)")
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
    head = (
        "<tr><th>participant</th><th>role</th><th>present</th><th>attentive</th><th>talk time</th>"
        "<th>turns</th><th>hand raises</th><th>engagement</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(pid)}</td><td>{p.role}</td><td>{p.present_ratio:.0%}</td><td>{p.attentive_ratio:.0%}</td>"
        f"<td>{p.talk_time_s:.1f} s</td><td>{p.turns}</td><td>{p.hand_raises}</td><td>{p.engagement_mean:.2f}</td></tr>"
        for pid, p in s.participants.items()
    )
    wait = "—" if s.mean_wait_time_s is None else f"{s.mean_wait_time_s:.1f} s"
    klass = (
        f"<tr><td>duration</td><td>{report.session.duration_s:.1f} s</td></tr>"
        f"<tr><td>engagement (mean)</td><td>{s.engagement_mean:.2f}</td></tr>"
        f"<tr><td>attentive (share)</td><td>{s.attentive_ratio:.0%}</td></tr>"
        f"<tr><td>teacher talk share</td><td>{s.teacher_talk_share:.0%}</td></tr>"
        f"<tr><td>talk equity (Gini, 0 = equal)</td><td>{s.talk_equity_gini:.2f}</td></tr>"
        f"<tr><td>hand-raise equity (Gini)</td><td>{s.hand_equity_gini:.2f}</td></tr>"
        f"<tr><td>mean wait time</td><td>{wait}</td></tr>"
        f"<tr><td>alerts raised</td><td>{s.alerts_raised}</td></tr>"
    )
    return (
        f'<h2>Participants</h2><table id="participants">{head}{body}</table>'
        f'<h2>Class</h2><table id="class">{klass}</table>'
    )


def render_html(report: Report) -> str:
    """The whole page as one self-contained HTML string."""
    with rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "classpulse"}):
        plots = {
            "engagement": ("Engagement over time", engagement_plot(report)),
            "strips": ("Presence, attention, speaking and hand raised per second", strips_plot(report)),
            "talk-time": ("Talk time", talk_time_plot(report)),
        }
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
