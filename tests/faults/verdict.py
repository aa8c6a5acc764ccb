"""What every fault must leave behind, as one list of readable problems (empty: survived)."""

from __future__ import annotations

from pathlib import Path

from shared.testkit.fault_report import FaultReport
from shared.testkit.fault_scenarios import RECOVERY_BOUND_S, STUDENTS


def problems(r: FaultReport) -> list[str]:
    """Every way run ``r`` fell short of issue 13's bar (read back from the topics from the start)."""
    out: list[str] = []
    if r.conflicting_ids:
        out.append(f"{r.conflicting_ids} score ids published with different values")
    if r.gateway_scores != r.scores:
        out.append(f"the gateway kept {r.gateway_scores} of the {r.scores} distinct scores on the topic")
    if r.frames_lost:
        out.append(f"{r.frames_lost} of {r.frames_in} published frames have no score and were not counted as dropped")
    if r.windows_missing:
        out.append(f"{r.windows_missing} one-second class windows missing (of {r.windows + r.windows_missing})")
    if r.false_alerts:
        out.append(f"false alerts raised by the fault: {', '.join(r.false_alerts[:8])}")
    for service, after in r.healthy_after_s.items():
        if after is None or after > RECOVERY_BOUND_S:
            out.append(f"{service} not healthy again within {RECOVERY_BOUND_S:.0f} s (after: {after})")
    for stage, after in r.resumed_after_s.items():
        if after is None or after > RECOVERY_BOUND_S:
            out.append(f"{stage} output for media after the fault did not resume within {RECOVERY_BOUND_S:.0f} s "
                       f"(after: {after})")
    if r.died:
        out.append(f"services exited during the run: {r.died}")
    if r.gateway_left != f"{STUDENTS}/{STUDENTS}":
        out.append(f"the gateway shows {r.gateway_left or 'no'} students as left after every publisher DELETEd")
    bad_exits = {name: code for name, code in r.exit_codes.items() if code != 0}
    if bad_exits:
        out.append(f"exit status on SIGTERM not 0: {bad_exits}")
    if r.forced_stops:
        out.append(f"stop ran past CLASSPULSE_STOP_TIMEOUT_S and was forced: {r.forced_stops}")
    return out


LOG_TAIL = 12
"""Lines of each service's log the assertion message carries (CI keeps no tmp folder)."""


def log_tails(folder: Path, *, lines: int = LOG_TAIL) -> str:
    """Each service log of one fault run: its warnings and errors, then its last ``lines`` lines (the
    health and metrics polls left out)."""
    out = []
    for log in sorted(folder.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        kept = [line for line in text if "GET /healthz" not in line and "GET /metrics" not in line]
        loud = [line for line in kept if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        tail = [line for line in kept[-lines:] if line not in loud[-lines:]]
        out.append(f"--- {log.name}: {len(loud)} warnings/errors, last {lines} lines")
        out.extend(loud[-lines:] + tail)
    return "\n".join(out)


def verdict(r: FaultReport, folder: Path | None = None) -> str:
    """The assertion message: the problems, then the figures and notes of the run, then (given the run's
    ``folder``) the tails of its service logs."""
    figures = (f"frames in {r.frames_in}, scored {r.frames_scored}, drops counted {r.dropped_counted}; scores "
               f"{r.scores} ({r.score_records} records); healthy after {r.healthy_after_s}; resumed after "
               f"{r.resumed_after_s}; notes {r.notes}")
    figures += f"; audio-only steps {r.camera_off_steps}"
    figures += "".join(f"\n  steps of {who}: {runs}" for who, runs in r.timelines.items())
    logs = f"\n{log_tails(folder)}" if folder is not None else ""
    return f"{r.fault}: " + "; ".join(problems(r)) + f"\n  {figures}" + logs
