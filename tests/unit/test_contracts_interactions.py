"""InteractionEvent: JSON round trip, rules per kind, derived features, no text in errors, live envelope."""

from __future__ import annotations

import json

import pytest

from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.interactions import InteractionCounts, InteractionEvent
from shared.contracts.live import LiveInteraction, decode_live, encode_live, state_field
from shared.contracts.topics import EVENT_TOPICS, INTERACTIONS

pytestmark = pytest.mark.unit

SECRET_TEXT = "my phone number is 555-0100. why is x negative"


def _event(**extra: object) -> InteractionEvent:
    base = {"event_id": "e1", "session": "s", "participant": "p", "kind": "chat", "ts": 1.7e9}
    return InteractionEvent.model_validate({**base, **extra})


def test_topic_and_json_round_trip() -> None:
    assert INTERACTIONS in EVENT_TOPICS and INTERACTIONS.name == "classpulse.interactions"
    codec = EventCodec(InteractionEvent)
    event = _event(text="hi", reply_to="e0", source="join_page")
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kind": "poll_response", "choice": "A"}, "poll_id and choice"),
        ({"kind": "reaction"}, "choice"),
        ({"kind": "reaction", "choice": "clap", "source": "speech"}, "cannot come from speech"),
        ({"start": 3.0, "end": 2.0}, "end must not be before start"),
        ({"kind": "shout"}, "kind"),
        ({"ts": -1}, "ts"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_rules_per_kind(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _event(**extra)


def test_derived_drops_text_unless_kept_and_keeps_a_producers_own_features() -> None:
    event = _event(text=SECRET_TEXT)
    stripped, kept = event.derived(keep_text=False), event.derived(keep_text=True)
    assert stripped.text is None and kept.text == SECRET_TEXT
    assert stripped.is_question is True and stripped.words == 10 and stripped.asks
    own = _event(is_question=False, words=7).derived(keep_text=False)
    assert (own.is_question, own.words, own.asks, own.word_count) == (False, 7, False, 7)
    assert _event(kind="question").derived(keep_text=False).asks
    assert not _event(kind="hand_raise_button").asks and not _event(kind="hand_raise_button").written
    assert _event(text="why is it 4").asks  # a producer that sent only text: derived on read


def test_decode_errors_name_fields_never_the_text() -> None:
    raw = json.dumps({"event_id": "e1", "session": "s", "participant": "p", "kind": "shout", "ts": 1.7e9,
                      "text": SECRET_TEXT, "words": -1})
    with pytest.raises(DecodeError) as err:
        EventCodec(InteractionEvent).decode(raw.encode())
    assert "kind" in str(err.value) and "words" in str(err.value)
    assert "555" not in str(err.value) and "negative" not in str(err.value)


def test_live_envelope() -> None:
    message = LiveInteraction(event=_event(), counts=InteractionCounts(questions=1, chat_messages=2))
    back = decode_live(encode_live(message))
    assert back == message and state_field(back) == "interaction:p"
