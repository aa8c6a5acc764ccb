"""Scores recorded with a batch's "publishing" marks, so that a shard's next owner publishes them as they were.

A worker marks a batch's media entries before it publishes their scores; the mark carries, per participant
of the batch, its entries and its encoded events (one line each). A worker that takes the shard over and
finds marked entries publishes those events again (same ids and values; consumers drop what already got
out) instead of scoring the media again from an older state.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.events import ScoreEvent
from shared.transport.shards import participant_key

_CODEC = EventCodec(ScoreEvent)


def record(entries: Iterable[tuple[str, str]], events: Iterable[ScoreEvent]) -> list[tuple[list[str], bytes]]:
    """Marks for ``entries`` (``(participant key, entry id)``): per participant, its entry ids and its events
    encoded (so an erasure of the participant's media erases its recorded scores with it)."""
    ids: dict[str, list[str]] = {}
    for key, entry_id in entries:
        ids.setdefault(key, []).append(entry_id)
    lines: dict[str, list[bytes]] = {}
    for ev in events:
        lines.setdefault(participant_key(ev.session, ev.participant), []).append(_CODEC.encode(ev))
    return [(entry_ids, b"\n".join(lines.get(key, []))) for key, entry_ids in ids.items()]


def recorded(results: Iterable[bytes]) -> tuple[list[ScoreEvent], list[DecodeError]]:
    """The distinct events (by id) of recorded results, and why any line could not be read."""
    events: dict[str, ScoreEvent] = {}
    errors: list[DecodeError] = []
    for line in (line for blob in results for line in blob.split(b"\n") if line):
        try:
            ev = _CODEC.decode(line)
        except DecodeError as exc:
            errors.append(exc)
            continue
        events.setdefault(ev.event_id, ev)
    return list(events.values()), errors
