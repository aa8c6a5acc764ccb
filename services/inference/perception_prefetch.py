"""Face perception run ahead of the inference engine in its own thread (file replay).

In a replay every frame is known as soon as it is decoded, and a participant's face chain
(tracking crop -> face mesh, or full detection when the track is lost) depends only on that
participant's earlier frames, never on the engine's state. :class:`PrefetchPerception` is a
:class:`~services.inference.perception.PerceptionBackend` around a
:class:`~services.inference.perception.SplitBackend`, whose :meth:`submit` the decode thread
calls for each sampled frame; one face thread runs the face chain in frame order, and
:meth:`analyze` (on the engine's thread) takes the results in the same order and runs pose
there, only on the frames the engine asks for, so results are exactly those of the wrapped
backend alone. mediapipe releases the GIL while its graphs run, so the face thread, the
engine's features/fusion and decoding use both cores.

The face thread runs ahead on its own working :class:`FaceTrack` per participant; each
analysed frame writes the hint as it stood after that frame into the request's track (the
participant's state), so the state is complete for the frames the engine has processed.
Lookahead is work in flight, not state: it is never snapshotted.

Memory stays bounded: the decode thread submits at most the replay queue's size ahead of the
engine.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from numpy.typing import NDArray

from services.inference.perception import Box, Face, FaceTrack, PerceptionRequest, PerceptionResult, SplitBackend
from shared.contracts.media import VideoFrame

_Done = tuple[Face, Box | None]
"""A frame's face and the tracking hint after it."""
_Work = tuple[FaceTrack, NDArray[np.uint8], "Future[_Done]"] | None


class PrefetchPerception:
    """Face chain in a thread ahead of the engine; pose on the engine's thread when asked."""

    def __init__(self, *, inner: SplitBackend) -> None:
        self.inner = inner
        self.name = f"{inner.name}+prefetch"
        self._work: queue.Queue[_Work] = queue.Queue()  # None stops the thread
        self._ahead: dict[str, deque[Future[_Done]]] = {}
        self._tracks: dict[str, FaceTrack] = {}  # the face thread's working hints (ahead of the engine)
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
        fut: Future[_Done] = Future()
        with self._lock:
            self._ahead.setdefault(key, deque()).append(fut)
            track = self._track(key)
        self._work.put((track, frame.image(), fut))

    def _track(self, key: str) -> FaceTrack:
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = FaceTrack(key=key)
        return track

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            track, image, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                face = self.inner.face(track, image)
                fut.set_result((face, track.box))
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
            (face, small), box = fut.result() if fut is not None else self._face_now(req)
            if req.track is not None:
                req.track.box = box
            pose = self.inner.pose(req.image, small) if req.want_pose else None
            out.append(PerceptionResult(face=face, pose=pose, pose_ran=req.want_pose))
        return out

    def _face_now(self, req: PerceptionRequest) -> _Done:
        """A frame nobody submitted: analysed here, after the face thread's queue (keeps frame order)."""
        fut: Future[_Done] = Future()
        with self._lock:
            track = self._track(req.key)
        self._work.put((track, req.image, fut))
        return fut.result()

    def forget(self, key: str) -> None:
        with self._lock:
            for fut in self._ahead.pop(key, deque()):
                fut.cancel()
            self._tracks.pop(key, None)
        self.inner.forget(key)  # call when the face thread is done with the key's frames

    def close(self) -> None:
        with self._lock:
            for pending in self._ahead.values():
                for fut in pending:
                    fut.cancel()
            self._ahead.clear()
            self._tracks.clear()
        if self._thread is not None:
            self._work.put(None)
            self._thread.join(timeout=10.0)
            self._thread = None
        self.inner.close()
