"""Gallery tiles from face boxes (no models): positions, ids by tile position, edges, noise, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.perception import Box
from services.replay.gallery_layout import LayoutError, content_box, layout_from_faces, positions
from shared.testkit.gallery import GAP, grid_boxes

pytestmark = pytest.mark.unit


def _face(tile: tuple[int, int, int, int], jitter: float = 0.0) -> tuple[Box, float]:
    x, y, w, h = tile
    cx, cy, s = x + w / 2 + jitter, y + 0.4 * h, 0.3 * h
    return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), 0.9


def _mean_frame(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> np.ndarray:
    frame = np.full((height, width), 24.0, np.float32)
    rng = np.random.default_rng(0)
    for x, y, w, h in boxes:
        frame[y : y + h, x : x + w] = 120 + 60 * rng.random((h, w))
    return frame


def test_grid_ids_row_by_row_and_edges_on_the_tile_borders() -> None:
    boxes = grid_boxes(6, cols=3, width=1280, height=720)
    frames = [[_face(b, jitter=(i % 3) - 1) for b in boxes] for i in range(10)]
    layout = layout_from_faces(frames, width=1280, height=720, mean=_mean_frame(boxes, 1280, 720))
    assert [t.participant for t in layout.tiles] == ["p1", "p2", "p3", "p4", "p5", "p6"]
    for tile, truth in zip(layout.tiles, boxes, strict=True):
        assert all(abs(a - b) <= GAP + 1 for a, b in zip(tile.bbox, truth, strict=True)), (tile, truth)
    assert layout.samples == 10 and all(t.seen == 1.0 for t in layout.tiles)


def test_missing_faces_and_noise() -> None:
    boxes = grid_boxes(4, cols=2, width=960, height=540)
    frames = []
    for i in range(20):
        faces = [_face(b) for k, b in enumerate(boxes) if not (k == 2 and 3 <= i < 14)]  # p3 away for a while
        if i == 5:
            faces.append(((10.0, 10.0, 30.0, 30.0), 0.6))  # one stray detection
        frames.append(faces)
    layout = layout_from_faces(frames, width=960, height=540)
    assert len(layout.tiles) == 4
    assert layout.tiles[2].seen == pytest.approx(9 / 20)
    # without a mean frame the edges lie midway between the faces and at the frame's border
    assert layout.tiles[0].bbox[:2] == (0, 0) and layout.tiles[3].bbox[0] + layout.tiles[3].bbox[2] == 960


def test_a_shorter_centred_row_keeps_tile_widths() -> None:
    top = grid_boxes(3, cols=3, width=900, height=600)[:3]
    bottom = [(150, 303, 297, 297), (453, 303, 297, 297)]
    frames = [[_face(b) for b in top + bottom] for _ in range(5)]
    layout = layout_from_faces(frames, width=900, height=600)
    p4, p5 = layout.tiles[3], layout.tiles[4]
    assert p4.bbox[0] == pytest.approx(150, abs=4) and p5.bbox[0] + p5.bbox[2] == pytest.approx(750, abs=4)


def test_one_face_is_one_tile_and_no_face_is_an_error() -> None:
    layout = layout_from_faces([[_face((0, 0, 640, 480))]] * 3, width=640, height=480)
    assert [(t.participant, t.bbox) for t in layout.tiles] == [("p1", (0, 0, 640, 480))]
    with pytest.raises(LayoutError):
        layout_from_faces([[], []], width=640, height=480)
    assert positions([[_face((0, 0, 640, 480))], [], [], []]) == []  # seen once in 4 frames: noise


def test_letterbox_bars_are_left_out() -> None:
    frame = np.zeros((480, 640), np.float32)
    frame[60:420, :] = np.random.default_rng(1).random((360, 640)) * 200
    assert content_box(frame, 640, 480) == (0, 60, 640, 420)

def test_a_position_the_second_model_does_not_confirm_is_no_tile() -> None:
    """A face-like blob on the border of two tiles, seen in 2 of 16 samples (what CI's clip had)."""
    boxes = grid_boxes(4, cols=2, width=960, height=540)
    blob: tuple[Box, float] = ((634.0, 226.0, 686.0, 278.0), 0.63)
    frames = [[_face(b) for b in boxes] + ([blob] if i in (6, 7) else []) for i in range(16)]
    assert len(layout_from_faces(frames, width=960, height=540).tiles) == 5  # the blob cuts a row in two

    asked: list[tuple[int, Box]] = []

    def confirm(i: int, box: Box) -> bool:
        asked.append((i, box))
        return box[0] != 634.0

    layout = layout_from_faces(frames, width=960, height=540, mean=_mean_frame(boxes, 960, 540), confirm=confirm)
    assert [t.participant for t in layout.tiles] == ["p1", "p2", "p3", "p4"]
    for tile, truth in zip(layout.tiles, boxes, strict=True):
        assert all(abs(a - b) <= GAP + 1 for a, b in zip(tile.bbox, truth, strict=True)), (tile, truth)
    # a real face is confirmed at its first (best) sample; the blob is offered its two samples, once each
    assert [i for i, box in asked if box[0] == 634.0] == [6, 7]
    assert len(asked) == 4 + 2


def test_a_position_is_confirmed_on_any_of_its_best_samples() -> None:
    boxes = grid_boxes(2, cols=2, width=960, height=540)
    frames = [[_face(b) for b in boxes] for _ in range(8)]
    tries: list[int] = []

    def third_time(i: int, box: Box) -> bool:
        tries.append(i)
        return len(tries) % 3 == 0

    layout = layout_from_faces(frames, width=960, height=540, confirm=third_time)
    assert len(layout.tiles) == 2 and len(tries) == 6 and len(set(tries[:3])) == 3
