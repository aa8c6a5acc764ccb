"""Taken media marks: exact repeats are refused, late media that was never taken is accepted."""

from __future__ import annotations

import pytest

from services.inference.media_marks import MAX_SPANS, TakenMarks

pytestmark = pytest.mark.unit


def test_repeats_are_refused_and_late_marks_accepted() -> None:
    marks = TakenMarks()
    assert all(marks.take("video", 0, s) for s in (4, 5, 6, 9))
    assert not marks.take("video", 0, 5)
    assert not marks.take("video", 0, 9)
    assert marks.take("video", 0, 0)  # older than all taken, never taken itself: a late claim
    assert marks.take("video", 0, 7) and marks.take("video", 0, 8)  # fills the gap: one interval
    assert marks.dump() == {"video": [(0, 0, 0), (0, 4, 9)]}
    assert marks.take("audio", 0, 5)  # kinds are apart
    assert marks.take("video", 1, 0)  # a new publish epoch starts at 0 again
    assert not marks.take("video", 1, 0)


def test_marks_survive_a_dump_and_forget_only_the_oldest_intervals() -> None:
    marks = TakenMarks()
    for s in range(0, 2 * (MAX_SPANS + 10), 2):  # every other frame: one interval each
        assert marks.take("video", 0, s)
    spans = marks.dump()["video"]
    assert len(spans) == MAX_SPANS and spans[0] == (0, 20, 20)
    again = TakenMarks(marks.dump())
    assert not again.take("video", 0, 20)
    assert not again.take("video", 0, 2)  # older than anything remembered: too late to tell, refused
    assert again.take("video", 0, 21)  # inside the remembered range and never taken
