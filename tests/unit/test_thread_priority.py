"""The transcribe stage at a lower CPU priority than scoring (``shared.thread_priority``, Linux per-thread nice)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from services.inference.transcribe.live import LiveTranscriber
from services.inference.transcribe.model import WhisperTranscriber
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.stage import TranscribeStage
from shared.metrics import Metrics
from shared.thread_priority import lower_this_thread, thread_nice
from shared.transport.memory import MemoryEventBus

pytestmark = pytest.mark.unit  # per-thread nice is Linux behaviour: CI and the images are Linux


def _in_thread(fn: object) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))  # type: ignore[operator]
    t.start()
    t.join()
    return out[0]


def test_only_the_calling_thread_and_the_threads_it_starts_become_nicer() -> None:
    main_before = thread_nice()

    def body() -> tuple[int | None, int, int]:
        after = lower_this_thread(5)
        child: list[int] = []
        t = threading.Thread(target=lambda: child.append(thread_nice()))
        t.start()
        t.join()
        return after, thread_nice(), child[0]

    after, own, child = _in_thread(body)  # type: ignore[misc]
    assert after == own == min(19, main_before + 5)
    assert child == own  # a native pool started there (CTranslate2's) inherits it
    assert thread_nice() == main_before  # the rest of the process keeps its priority


def test_nothing_changes_for_zero_and_the_value_is_capped_at_19() -> None:
    assert _in_thread(lambda: (lower_this_thread(0), thread_nice())) == (None, thread_nice())
    assert _in_thread(lambda: lower_this_thread(50)) == 19


class _Whisper(WhisperTranscriber):
    """Records the priority of the thread that loads it (where CTranslate2 would start its threads)."""

    def __init__(self) -> None:
        super().__init__(settings=TranscribeSettings())
        self.loaded_at_nice: int | None = None

    @property
    def loaded(self) -> bool:
        return self.loaded_at_nice is not None

    def load(self) -> None:
        self.loaded_at_nice = thread_nice()


@pytest.mark.parametrize("nice", [0, 7])
def test_the_live_stage_loads_whisper_in_its_own_thread_at_its_nice_value(nice: int) -> None:
    base = thread_nice()
    whisper = _Whisper()
    metrics = Metrics(registry=CollectorRegistry())
    stage = TranscribeStage(settings=TranscribeSettings(nice=nice), keep_text=False, metrics=metrics, model=whisper)
    speech = LiveTranscriber(stage=stage, bus=MemoryEventBus(), metrics=metrics)
    speech.load()
    assert whisper.loaded_at_nice == min(19, base + nice)
    assert thread_nice() == base  # the caller (the service's boot path) is left as it was

    async def stage_thread_nice() -> int:  # segmenting and Whisper calls run in that same thread
        return await asyncio.get_running_loop().run_in_executor(speech._pool, thread_nice)

    assert asyncio.run(stage_thread_nice()) == min(19, base + nice)
