"""Face perception run ahead of the inference engine in its own thread (file replay only).

In a replay every frame is known as soon as it is decoded, and a participant's face chain
(tracking crop -> face mesh, or full detection when the track is lost) depends only on that
participant's earlier frames, never on the engine's state. :class:`PrefetchPerception` is a
:class:`~services.inference.perception.PerceptionBackend` whose :meth:`submit` the decode
thread calls for each sampled frame; one face thread runs the face chain in frame order, and
:meth:`analyze` (on the engine's thread) takes the results in the same order and runs pose
there, only on the frames the engine asks for, so results are exactly those of the wrapped
backend alone. mediapipe releases the GIL while its graphs run, so the face thread, the
engine's features/fusion and decoding use both cores.

Memory stays bounded: the decode thread submits at most the replay queue's size ahead of the
engine.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from services.inference.perception import FaceObservation, PerceptionRequest, PerceptionResult, PoseObservation
from shared.contracts.media import VideoFrame
from shared.log import get_logger

log = get_logger(__name__)

Face = tuple[FaceObservation | None, NDArray[np.uint8] | None]


class SplitBackend(Protocol):
    """A backend whose face and pose parts can run on different threads (``MediapipeBackend``)."""

    name: str

    def load(self) -> None: ...

    def face(self, key: str, image: NDArray[np.uint8]) -> Face: ...

    def pose(self, image: NDArray[np.uint8], small: NDArray[np.uint8] | None = None) -> PoseObservation | None: ...

    def forget(self, key: str) -> None: ...

    def close(self) -> None: ...


_Work = tuple[str, NDArray[np.uint8], "Future[Face]"] | None
class PrefetchPerception:
    """Face chain in a thread ahead of the engine; pose on the engine's thread when asked."""

    def __init__(self, *, inner: SplitBackend) -> None:
        self.inner = inner
        self.name = f"{inner.name}+prefetch"
        self._work: queue.Queue[_Work] = queue.Queue()  # None stops the thread
        self._ahead: dict[str, deque[Future[Face]]] = {}
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        self.inner.load()
        self._loaded.set()
        self._thread = threading.Thread(target=self._run, name="classpulse-replay-face", daemon=True)
        self._thread.start()

    def submit(self, frame: VideoFrame) -> None:
        """Queue a frame's face analysis (frames of one participant in order; any thread)."""
        key = f"{frame.session}/{frame.participant}"
        fut: Future[Face] = Future()
        with self._lock:
            self._ahead.setdefault(key, deque()).append(fut)
        self._work.put((key, frame.image(), fut))

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            key, image, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self.inner.face(key, image))
            except BaseException as exc:  # handed to the engine's thread by analyze()
                fut.set_exception(exc)

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        if not self._loaded.is_set():
            raise RuntimeError("PrefetchPerception used before load()")
        out = []
        for req in requests:
            with self._lock:
                pending = self._ahead.get(req.key)
                fut = pending.popleft() if pending else None
            face, small = fut.result() if fut is not None else self._face_now(req)
            pose = self.inner.pose(req.image, small) if req.want_pose else None
            out.append(PerceptionResult(face=face, pose=pose, pose_ran=req.want_pose))
        return out

    def _face_now(self, req: PerceptionRequest) -> Face:
        """A frame nobody submitted: analysed here, after the face thread's queue (keeps frame order)."""
        fut: Future[Face] = Future()
        self._work.put((req.key, req.image, fut))
        return fut.result()

    def forget(self, key: str) -> None:
        with self._lock:
            for fut in self._ahead.pop(key, deque()):
                fut.cancel()
        self.inner.forget(key)  # call when the face thread is done with the key's frames

    def close(self) -> None:
        with self._lock:
            for pending in self._ahead.values():
                for fut in pending:
                    fut.cancel()
            self._ahead.clear()
        if self._thread is not None:
            self._work.put(None)
            self._thread.join(timeout=10.0)
            self._thread = None
        self.inner.close()
