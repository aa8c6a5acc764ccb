"""Perception fakes for tests and benches: a backend that finds no face (the engine still makes one step per
frame), recording the batch sizes it was given."""

from __future__ import annotations

from collections.abc import Sequence

from services.inference.perception import PerceptionRequest, PerceptionResult


class NoFaces:
    """A perception backend that sees no face in any frame; `batches` lists the size of every call."""

    name = "no-faces"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def load(self) -> None:
        return None

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        self.batches.append(len(requests))
        return [PerceptionResult(face=None, pose=None, pose_ran=r.want_pose) for r in requests]

    def forget(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None
