"""``classpulse replay FILE --chat chat.jsonl``: interaction events merged into a replay's report.

One JSON object per line, the :class:`~shared.contracts.interactions.InteractionEvent` contract
with ``ts`` in **seconds from the recording start** (a class: from the session start);
``session`` may be left out (it must match when given), ``event_id`` too (``chat-<line>``).
Blank lines are skipped. A bad line stops the replay before any analysis with one readable
line naming its line number.

The events go through the same text stage as live ones (:class:`shared.text.stage.TextStage`:
question, words, on-topic relevance) in time order, then into the aggregation core: per
participant ``questions`` / ``chat_messages`` / ``on_topic_ratio``, the class figures and the
question list. Text stays in the report only with ``CLASSPULSE_KEEP_TEXT=true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from shared.contracts.interactions import InteractionEvent
from shared.text.stage import TextStage

PARSE_EPOCH = 1_000_000_000.0
"""Events are parsed with ``ts = PARSE_EPOCH + seconds`` (the contract wants epoch seconds) and
moved onto the replay's session clock when merged."""
MAX_LINES = 200_000
MAX_LINE_CHARS = 20_000


class ChatFileError(ValueError):
    """A chat file that cannot be used: one line for the user."""


class InteractionSink(Protocol):
    def add_interaction(self, event: InteractionEvent) -> bool: ...

    @property
    def origin(self) -> float | None: ...


@dataclass
class RecordedInteractions:
    """The parsed events of a chat file (``ts`` = PARSE_EPOCH + seconds) and the stage that derives them."""

    source: str
    events: list[InteractionEvent]
    stage: TextStage
    keep_text: bool


def _line_error(path: str, number: int, exc: ValidationError) -> ChatFileError:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return ChatFileError(f"{path} line {number}: " + "; ".join(parts))


def load_chat(path: Path, *, session: str, stage: TextStage, keep_text: bool) -> RecordedInteractions:
    """Parse a chat file; raises :class:`ChatFileError` (file or line number + what is wrong)."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ChatFileError(f"cannot read the chat file {name} ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChatFileError(f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON Lines") from exc
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ChatFileError(f"{name} has {len(lines)} lines; at most {MAX_LINES} events per replay")
    events: list[InteractionEvent] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise ChatFileError(f"{name} line {number}: longer than {MAX_LINE_CHARS} characters")
        try:
            item = json.loads(line)
        except ValueError:
            raise ChatFileError(f"{name} line {number}: not JSON; each line must be one JSON object") from None
        if not isinstance(item, dict):
            raise ChatFileError(f"{name} line {number}: must be a JSON object (an interaction event), "
                                f"got a JSON {type(item).__name__}")
        ts = item.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts <= 1e7:
            raise ChatFileError(f"{name} line {number}: ts must be seconds from the recording start (a number >= 0)")
        given = item.get("session", session)
        if given != session:
            raise ChatFileError(f"{name} line {number}: session {given!r} is not the replay's session {session!r}")
        try:
            event = InteractionEvent.model_validate(
                {"event_id": f"chat-{number}", **item, "session": session, "ts": PARSE_EPOCH + float(ts)})
        except ValidationError as exc:
            raise _line_error(name, number, exc) from None
        if event.event_id in seen:
            raise ChatFileError(f"{name} line {number}: event_id {event.event_id!r} repeats an earlier line")
        seen.add(event.event_id)
        events.append(event)
    events.sort(key=lambda e: e.ts)
    return RecordedInteractions(source=name, events=events, stage=stage, keep_text=keep_text)


def merge_interactions(sink: InteractionSink, recorded: RecordedInteractions, *, epoch: float | None) -> int:
    """Move the events onto the session clock, derive their features, count them; returns how many."""
    base = epoch if epoch is not None else sink.origin
    shift = (base if base is not None else PARSE_EPOCH) - PARSE_EPOCH
    moved = [e.model_copy(update={"ts": e.ts + shift}) for e in recorded.events]
    if any(e.text for e in moved):
        recorded.stage.load()
    derived = recorded.stage.derive(moved, keep_text=recorded.keep_text)
    return sum(1 for e in derived if sink.add_interaction(e))
