"""``classpulse replay FILE --chat chat.jsonl``: the file's rules (one readable line per bad line, with its
number), the merge onto the replay's clock, and the report figures it gives (no media models needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from services.replay.chat import ChatFileError, load_chat, merge_interactions
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.testkit.clips import make_clip
from shared.text.settings import TextSettings
from shared.text.stage import TextStage

pytestmark = pytest.mark.unit

RULES_ONLY = TextStage(settings=TextSettings(relevance="off"), encoder=None)
EPOCH = 1_767_261_600.0


def _write(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


GOOD = [
    {"participant": "ms-lee", "role": "teacher", "kind": "chat", "ts": 3.0,
     "text": "who can tell me what 1/2 + 1/4 is"},
    "",
    {"event_id": "a1", "participant": "alice", "kind": "answer", "ts": 7.5, "text": "three quarters"},
    {"participant": "bob", "kind": "question", "ts": 12.0, "text": "is this on the test?"},
    {"participant": "bob", "kind": "reaction", "ts": 13.0, "choice": "thumbs_up"},
]


def test_good_file_merges_onto_the_session_clock(tmp_path: Path) -> None:
    recorded = load_chat(_write(tmp_path, GOOD), session="s", stage=RULES_ONLY, keep_text=False)
    assert [e.event_id for e in recorded.events] == ["chat-1", "a1", "chat-4", "chat-5"]
    agg = SessionAggregator(session="s", config=AggregationConfig(), origin=EPOCH)
    assert merge_interactions(agg, recorded, epoch=EPOCH) == 4
    s = agg.summary()
    assert (s.questions_teacher, s.questions_students, s.teacher_questions_answered) == (1, 1, 1)
    assert s.response_latency_s == pytest.approx(4.5)
    assert s.participants["bob"].chat_messages == 1 and s.participants["alice"].chat_messages == 1
    questions = agg.questions()
    assert [(q.t, q.participant) for q in questions] == [(3.0, "ms-lee"), (12.0, "bob")]
    assert all(q.text is None for q in questions)  # text only with CLASSPULSE_KEEP_TEXT=true


def test_text_is_kept_only_when_asked(tmp_path: Path) -> None:
    recorded = load_chat(_write(tmp_path, GOOD), session="s", stage=RULES_ONLY, keep_text=True)
    agg = SessionAggregator(session="s", config=AggregationConfig(), origin=EPOCH)
    merge_interactions(agg, recorded, epoch=EPOCH)
    assert agg.questions()[1].text == "is this on the test?"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2: not JSON; each line must be one JSON object"),
        ("[1, 2]", "line 2: must be a JSON object (an interaction event), got a JSON list"),
        ({"participant": "a", "kind": "chat", "ts": "soon"}, "line 2: ts must be seconds from the recording start"),
        ({"participant": "a", "kind": "chat", "ts": -1}, "line 2: ts must be seconds"),
        ({"participant": "a", "kind": "shout", "ts": 1}, "line 2: kind: Input should be"),
        ({"participant": "a", "kind": "poll_response", "ts": 1}, "line 2: a poll_response needs poll_id and choice"),
        ({"participant": "a", "kind": "chat", "ts": 1, "session": "other"}, "line 2: session 'other' is not"),
        ({"participant": "a", "kind": "chat", "ts": 1, "colour": "red"}, "line 2: colour: Extra inputs"),
        ({"event_id": "chat-1", "participant": "a", "kind": "chat", "ts": 1}, "line 2: event_id 'chat-1' repeats"),
    ],
)
def test_a_bad_line_is_one_readable_line_with_its_number(tmp_path: Path, line: object, expected: str) -> None:
    path = _write(tmp_path, [GOOD[0], line])
    with pytest.raises(ChatFileError) as err:
        load_chat(path, session="s", stage=RULES_ONLY, keep_text=False)
    message = str(err.value)
    assert message.startswith(f"{path} ") and expected in message and "\n" not in message


def test_the_cli_says_what_is_wrong_before_analysing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "clip.mp4"
    make_clip(clip, seconds=2.0)
    chat = _write(tmp_path, [GOOD[0], {"participant": "a", "kind": "chat", "ts": 1, "colour": "red"}])
    code = main(["replay", str(clip), "--chat", str(chat), "--out", str(tmp_path / "o"), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "chat.jsonl line 2: colour: Extra inputs are not permitted" in err[0]
    assert not (tmp_path / "o" / "report.json").exists()
    missing = main(["replay", str(clip), "--chat", str(tmp_path / "nope.jsonl"), "--no-progress"])
    assert missing == 2 and "cannot read the chat file" in capsys.readouterr().err


def test_transcripts_keep_chat_text_and_strangers_are_named(tmp_path: Path) -> None:
    from services.replay.decoding import Track
    from services.replay.files import _chat, _chat_strangers

    path = _write(tmp_path, GOOD)
    assert not _chat(path, session="s", keep_text=False).keep_text  # CLASSPULSE_KEEP_TEXT unset
    kept = _chat(path, session="s", keep_text=True)  # what replay --transcripts asks for
    assert kept.keep_text
    tracks = [Track(source=None, participant="alice"), Track(source=None, participant="p2")]
    (warning,) = _chat_strangers(kept, tracks)
    assert "1 participant(s) with no recording (bob)" in warning and "alice, p2" in warning  # the teacher is not one
    assert _chat_strangers(kept, [*tracks, Track(source=None, participant="bob")]) == []
