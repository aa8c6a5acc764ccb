"""Open alerts of one session and the Alert messages for their state changes.

Kept by :class:`shared.analytics.session.SessionAggregator` (one book per session).
"""

from __future__ import annotations

from shared.contracts.events import Alert, AlertKind
from shared.contracts.timing import TimingTrail

_RAISED_TEXT: dict[AlertKind, str] = {
    "away": "participant not in frame for more than {threshold:g} s",
    "attention_dip": "class attention below {threshold:g} % for {duration:g} s",
    "silence": "no student has spoken for {minutes:g} min",
    "camera_off": "participant camera off for more than {threshold:g} s",
}
_CLEARED_TEXT: dict[AlertKind, str] = {
    "away": "participant back in frame",
    "attention_dip": "class attention recovered",
    "silence": "a student spoke",
    "camera_off": "participant camera back on",
}

AlertKey = tuple[str, str]
"""(kind, participant or '' for class-level alerts)."""


def _fmt(x: float) -> str:
    return f"{x:.3f}"


class AlertBook:
    """Which alerts are open (kind, participant -> since) and how many were raised."""

    def __init__(self, *, session: str) -> None:
        self.session = session
        self.open: dict[AlertKey, float] = {}
        self.raised_total = 0

    def is_open(self, kind: AlertKind, participant: str | None = None) -> bool:
        return (kind, participant or "") in self.open

    def raise_(
        self, kind: AlertKind, participant: str | None, *, since: float, at: float, origin: float, **fmt: float
    ) -> Alert | None:
        """Open an alert; None when it is open already."""
        key = (kind, participant or "")
        if key in self.open:
            return None
        self.open[key] = since
        self.raised_total += 1
        return self._alert(kind, participant, "raised", since=since, at=at, origin=origin,
                           message=_RAISED_TEXT[kind].format(**fmt))

    def clear(self, kind: AlertKind, participant: str | None, *, at: float, origin: float) -> Alert | None:
        """Close an open alert; None when it was not open."""
        since = self.open.pop((kind, participant or ""), None)
        if since is None:
            return None
        return self._alert(kind, participant, "cleared", since=since, at=at, origin=origin,
                           message=_CLEARED_TEXT[kind])

    def _alert(
        self,
        kind: AlertKind,
        participant: str | None,
        state: str,
        *,
        since: float,
        at: float,
        origin: float,
        message: str,
    ) -> Alert:
        who = participant if participant is not None else "-"
        return Alert(
            event_id=f"{self.session}/{kind}/{who}/{_fmt(since)}/{state}",
            session=self.session,
            participant=participant,
            kind=kind,
            state="raised" if state == "raised" else "cleared",
            since=round(since, 6),
            at=round(at, 6),
            message=message,
            timing=TimingTrail(capture_ts=origin + at),
        )


def alert_order(alert: Alert) -> tuple[float, str, str, float, int]:
    """Deterministic output order: by time, then alert, then episode (a raise before its own clear)."""
    return (alert.at, alert.kind, alert.participant or "", alert.since, 0 if alert.state == "raised" else 1)
