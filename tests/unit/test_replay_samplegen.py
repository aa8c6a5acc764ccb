"""The sample generator: scripted truth per second, boundary exclusion, and the encoded containers."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from shared.contracts.report import TimelineRow
from shared.testkit.clips import write_sample
from shared.testkit.script import SampleScript, Segment, SpeechSpan, agreement, truth_timeline

pytestmark = pytest.mark.unit

SCRIPT = SampleScript(
    segments=(Segment(0, 4, "frontal"), Segment(4, 7, "away"), Segment(7, 9, "empty"), Segment(9, 10, "frontal")),
    speech=(SpeechSpan(1.5, 3.5),),
)


def _rows(present: list[bool], attentive: list[bool], speaking: list[bool]) -> list[TimelineRow]:
    return [
        TimelineRow(t=float(t), participant="p1", present=p, attentive=a, speaking=s, hand_raised=False,
                    engagement=0.5, confidence=0.5)
        for t, (p, a, s) in enumerate(zip(present, attentive, speaking, strict=True))
    ]


def test_truth_per_second_and_boundaries() -> None:
    truth = truth_timeline(SCRIPT)
    assert [x.present for x in truth] == [True] * 7 + [False] * 2 + [True]
    assert [x.attentive for x in truth] == [True] * 4 + [False] * 5 + [True]
    assert [x.speaking for x in truth] == [False, True, True] + [False] * 7  # state at the middle of each second
    # a change at 4.0 s (attentive) makes seconds 3 and 4 "near"; present changes at 7 and 9
    assert [x.near_boundary["attentive"] for x in truth] == [False, False, False, True, True, False, False, False,
                                                             True, True]
    assert [x.near_boundary["present"] for x in truth][5:] == [False, True, True, True, True]
    # speech 1.5..3.5: seconds 0..4 all touch a change within 1 s
    assert [x.near_boundary["speaking"] for x in truth][:6] == [True, True, True, True, True, False]


def test_agreement_counts_only_seconds_away_from_changes() -> None:
    truth = truth_timeline(SCRIPT)
    perfect = _rows([x.present for x in truth], [x.attentive for x in truth], [x.speaking for x in truth])
    assert agreement(truth, perfect) == {"present": 1.0, "attentive": 1.0, "speaking": 1.0}
    wrong_at_edge = list(perfect)
    wrong_at_edge[4] = perfect[4].model_copy(update={"attentive": True})  # next to the 4.0 s change: not judged
    wrong_inside = list(perfect)
    wrong_inside[6] = perfect[6].model_copy(update={"attentive": True})
    assert agreement(truth, wrong_at_edge)["attentive"] == 1.0
    assert agreement(truth, wrong_inside)["attentive"] == pytest.approx(5 / 6)
    assert agreement(truth, perfect[:5])["present"] < 1.0  # missing seconds count as misses


@pytest.mark.parametrize(("name", "vcodec", "acodec"), [("a.mp4", "h264", "aac"), ("a.webm", "vp8", "opus")])
def test_encoded_containers(tmp_path: Path, name: str, vcodec: str, acodec: str) -> None:
    script = SampleScript(segments=(Segment(0, 1.0, "frontal"), Segment(1.0, 2.0, "empty")),
                          speech=(SpeechSpan(0.2, 1.4),))
    truth = write_sample(tmp_path / name, script=script)
    assert len(truth) == 2
    with av.open(str(tmp_path / name)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == (vcodec, acodec)
        assert (v.codec_context.width, v.codec_context.height) == (640, 480)
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 30
    # the frontal second shows the photo, the empty second only the room
    assert float(np.abs(frames[5].astype(int) - frames[25].astype(int)).mean()) > 20


def test_missing_tracks_change_the_truth(tmp_path: Path) -> None:
    script = SampleScript(segments=(Segment(0, 2.0, "frontal"),), speech=(SpeechSpan(0.0, 2.0),))
    assert not any(x.present for x in write_sample(tmp_path / "v.mp4", script=script, video=False))
    assert not any(x.speaking for x in write_sample(tmp_path / "a.webm", script=script, audio=False))
