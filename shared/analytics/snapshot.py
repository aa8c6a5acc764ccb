"""Snapshot a :class:`SessionAggregator` to JSON bytes and restore it.

Used by the aggregator's session driver (the values of its faust table / snapshot store).

The snapshot holds everything the core needs to continue exactly where it was: pending
events, open buckets, participant state, open alerts and the ids seen within lateness.
The configuration is not stored: the restoring worker supplies its own. Snapshots written
before interaction counting restore with zero counts.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.analytics.state import Cell, Lifecycle, Participant, Sample
from shared.contracts.privacy import SessionPrivacy

SNAPSHOT_VERSION = 1


def astuple(obj: Sample | Lifecycle | Participant | Cell) -> list[object]:
    """Field values in declaration order (flat dataclasses; much faster than dataclasses.astuple)."""
    return [getattr(obj, name) for name in _FIELDS[type(obj)]]


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (Sample, Lifecycle, Participant, Cell)
}


class SnapshotError(ValueError):
    """A snapshot that cannot be restored (other version or corrupt)."""


def dump(agg: SessionAggregator) -> bytes:
    """Serialize the full state of ``agg``."""
    a: Any = agg
    data = {
        "v": SNAPSHOT_VERSION,
        "session": agg.session,
        "origin": agg.origin,
        "origin_fixed": a._origin_fixed,
        "min_seen": a._min_seen,
        "watermark": agg.watermark,
        "last_now": a._last_now,
        "late": agg.late_events,
        "dup": agg.duplicate_events,
        "ended": agg.ended,
        "ended_at": agg.ended_at,
        "seen": a._seen,
        "pending": {pid: [astuple(s) for s in lst] for pid, lst in a._pending.items() if lst},
        "lifecycle": [astuple(lc) for lc in a._lifecycle],
        "participants": {pid: astuple(p) for pid, p in a._participants.items()},
        "dip_buckets": [[k, {pid: astuple(c) for pid, c in cells.items()}] for k, cells in a._dip_buckets.items()],
        "open": [[*key, {pid: astuple(c) for pid, c in cells.items()}] for key, cells in a._open.items()],
        "last_t": a._last_t,
        "next_tumbling": [[size, k] for size, k in a._next_tumbling.items()],
        "next_hopping": a._next_hopping,
        "next_dip_bucket": a._next_dip_bucket,
        "dip_since": a._dip_since,
        "silence_since": a._silence_since,
        "teacher_end": a._teacher_end,
        "awaiting": a._awaiting_answer,
        "waits": a._waits,
        "alerts_open": [[kind, pid, since] for (kind, pid), since in agg.alerts.open.items()],
        "alerts_raised": agg.alerts.raised_total,
        "interactions": agg.book.dump(),
        "pending_interactions": a._pending_interactions,
        "privacy": agg.privacy.model_dump(mode="json"),
    }
    return json.dumps(data, separators=(",", ":")).encode()


def load(raw: bytes, *, config: AggregationConfig) -> SessionAggregator:
    """Rebuild an aggregator from :func:`dump` output."""
    try:
        data = json.loads(raw)
        if data.get("v") != SNAPSHOT_VERSION:
            raise SnapshotError(f"snapshot version {data.get('v')} is not {SNAPSHOT_VERSION}")
        agg = SessionAggregator(session=data["session"], config=config, origin=data["origin"])
        a: Any = agg
        a._origin_fixed = data["origin_fixed"]
        a._min_seen = data["min_seen"]
        agg.watermark = data["watermark"]
        a._last_now = data["last_now"]
        agg.late_events = data["late"]
        agg.duplicate_events = data["dup"]
        agg.ended = data["ended"]
        agg.ended_at = data["ended_at"]
        a._seen = dict(data["seen"])
        a._pending = {pid: [Sample(*s) for s in lst] for pid, lst in data["pending"].items()}
        a._lifecycle = [Lifecycle(*lc) for lc in data["lifecycle"]]
        a._participants = {pid: Participant(*p) for pid, p in data["participants"].items()}
        a._dip_buckets = {int(k): {pid: Cell(*c) for pid, c in cells.items()} for k, cells in data["dip_buckets"]}
        a._open = {(kind, int(size), int(first)): {pid: Cell(*c) for pid, c in cells.items()}
                   for kind, size, first, cells in data["open"]}
        a._last_t = data["last_t"]
        stored = {float(size): int(k) for size, k in data["next_tumbling"]}
        a._next_tumbling = {size: stored.get(size, 0) for size in config.tumbling_sizes_s}
        a._next_hopping = data["next_hopping"]
        a._next_dip_bucket = data["next_dip_bucket"]
        a._dip_since = data["dip_since"]
        a._silence_since = data["silence_since"]
        a._teacher_end = data["teacher_end"]
        a._awaiting_answer = data["awaiting"]
        a._waits = [(float(t), float(w)) for t, w in data["waits"]]
        agg.alerts.open = {(kind, pid): float(since) for kind, pid, since in data["alerts_open"]}
        agg.alerts.raised_total = data["alerts_raised"]
        book = data.get("interactions")
        if book is None:  # written before the interaction book: ids and counts in their old keys
            book = {"ids": data.get("interaction_ids", []), "by_role": data.get("questions_by_role", {}),
                    "dup": data.get("dup_interactions", 0)}
        agg.book.restore(book)
        a._pending_interactions = [(float(ts), str(pid), role, int(q), int(m))
                                   for ts, pid, role, q, m in data.get("pending_interactions", [])]
        if data.get("privacy") is not None:  # snapshots before privacy controls: no opt-outs
            agg.privacy = SessionPrivacy.model_validate(data["privacy"])
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise SnapshotError(f"cannot restore aggregator snapshot: {exc}") from exc
    return agg
