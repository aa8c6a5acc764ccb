"""Per-chunk audio features: silero-vad speech probability, RMS level, log-mel bands.

Silero VAD runs from the ONNX file shipped in the ``silero-vad`` wheel through onnxruntime
(about 0.1 ms per 32 ms window), batched across participants. The model is shared and
stateless: each participant's :class:`VadStream`, held by its state object, carries its
recurrent state, 64-sample context and the samples that did not fill a 512-sample
window. The ``silero_vad`` package itself is never imported (it imports torch, and calls
``torch.set_num_threads(1)`` for the whole process): only its ONNX file is located. The
log-mel filterbank is torchaudio's (HTK mel scale, no normalisation), computed in numpy, so
the audio features need no torch.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from shared.contracts.media import AudioChunk

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
STATE_SHAPE = (2, 128)
N_MELS = 8
SILENCE_DBFS = -100.0


def silero_onnx_path() -> Path:
    """The ONNX model inside the installed silero-vad wheel (no download; the package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is missing; install silero-vad==6.2.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"silero-vad's ONNX model is missing at {path}; reinstall silero-vad==6.2.3")
    return path


def rms_dbfs(wave: NDArray[np.float32]) -> float:
    """Root-mean-square level in dBFS (full-scale sine = -3 dBFS); -100 for digital silence."""
    if wave.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return max(SILENCE_DBFS, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DBFS


def to_16k(wave: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """Mono float32 at 16 kHz (decimation for multiples of 16 kHz, torchaudio otherwise)."""
    if sample_rate == SAMPLE_RATE:
        return wave
    if sample_rate % SAMPLE_RATE == 0:
        return np.ascontiguousarray(wave[:: sample_rate // SAMPLE_RATE])
    import torch
    import torchaudio.functional as taf

    out = taf.resample(torch.from_numpy(np.array(wave, dtype=np.float32)), sample_rate, SAMPLE_RATE)
    return np.asarray(out.numpy(), dtype=np.float32)


@dataclass(eq=False)
class VadStream:
    """One participant's place in silero-vad's stream (what :meth:`SileroVad.process` carries on)."""

    state: NDArray[np.float32] = field(default_factory=lambda: np.zeros(STATE_SHAPE, dtype=np.float32))
    context: NDArray[np.float32] = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    remainder: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    last_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class VadWindows:
    """silero-vad's probabilities of the 512-sample windows that end in one chunk, as another stream saw them."""

    carried: int
    """Samples of earlier chunks that the chunk's first window began with (the stream's remainder)."""
    probs: tuple[float, ...]


class KeptWindows:
    """Chunks' VAD windows kept for a second reader (the transcribe stage's segmenter), each taken once.

    Keyed by the chunk's session, participant and seq. Bounded: past ``limit`` chunks the oldest
    are forgotten (a reader that never came, e.g. audio that was scored but not handed on); a
    reader that finds none runs silero-vad itself.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._kept: OrderedDict[tuple[str, str, int], VadWindows] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, chunk: AudioChunk, windows: VadWindows) -> None:
        with self._lock:
            self._kept[(chunk.session, chunk.participant, chunk.seq)] = windows
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)

    def take(self, chunk: AudioChunk) -> VadWindows | None:
        with self._lock:
            return self._kept.pop((chunk.session, chunk.participant, chunk.seq), None)

    def __len__(self) -> int:
        return len(self._kept)


class SileroVad:
    """Streaming silero-vad over many participants' streams, one onnxruntime call per window index."""

    def __init__(self) -> None:
        self._session: Any = None

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(silero_onnx_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def process(self, items: Sequence[tuple[VadStream, NDArray[np.float32]]]) -> list[float]:
        """Speech probability (mean over its 32 ms windows) of each ``(stream, 16 kHz chunk)``.

        Items of one stream are consumed in order and advance it; windows of different
        streams share one onnxruntime call per window index.
        """
        return [mean for mean, _ in self.process_windows(items)]

    def process_kept(self, items: Sequence[tuple[VadStream, NDArray[np.float32]]]) -> list[tuple[float, VadWindows]]:
        """:meth:`process`, and each item's windows as a second segmenter of the same stream reuses them."""
        consumed: dict[int, int] = {}  # samples of a stream's remainder and earlier items in this call
        carried = []
        for stream, wave in items:
            before = consumed.get(id(stream), stream.remainder.size)
            carried.append(before % WINDOW)
            consumed[id(stream)] = before + wave.size
        return [(mean, VadWindows(carried=c, probs=tuple(probs)))
                for (mean, probs), c in zip(self.process_windows(items), carried, strict=True)]

    def process_windows(
        self, items: Sequence[tuple[VadStream, NDArray[np.float32]]]
    ) -> list[tuple[float, list[float]]]:
        """Each item's mean probability (as :meth:`process`) and the probabilities of the windows that end in it."""
        if self._session is None:
            raise RuntimeError("SileroVad used before load()")
        by_stream: dict[int, list[int]] = {}
        streams: list[VadStream] = []
        for i, (stream, _) in enumerate(items):
            if id(stream) not in by_stream:
                by_stream[id(stream)] = []
                streams.append(stream)
            by_stream[id(stream)].append(i)
        members = [by_stream[id(stream)] for stream in streams]
        windows: list[list[NDArray[np.float32]]] = []
        owners: list[list[int]] = []  # item index each window's last sample belongs to
        for stream, idx in zip(streams, members, strict=True):
            parts = [stream.remainder, *(items[i][1] for i in idx)]
            ends = np.cumsum([len(p) for p in parts])
            data = np.concatenate(parts).astype(np.float32, copy=False)
            n = data.size // WINDOW
            windows.append([data[w * WINDOW : (w + 1) * WINDOW] for w in range(n)])
            part_of = np.searchsorted(ends, [(w + 1) * WINDOW - 1 for w in range(n)], side="right")
            owners.append([idx[max(0, int(p) - 1)] for p in part_of])
            stream.remainder = np.array(data[n * WINDOW :], dtype=np.float32)
        probs: list[list[float]] = [[] for _ in items]
        longest = max((len(w) for w in windows), default=0)
        sr = np.array(SAMPLE_RATE, dtype=np.int64)
        for step in range(longest):
            rows = [k for k, w in enumerate(windows) if len(w) > step]
            x = np.stack([np.concatenate([streams[k].context, windows[k][step]]) for k in rows]).astype(np.float32)
            state = np.stack([streams[k].state for k in rows], axis=1)
            out, new_state = self._session.run(None, {"input": x, "state": state, "sr": sr})
            for j, k in enumerate(rows):
                streams[k].state = np.array(new_state[:, j, :], dtype=np.float32)
                streams[k].context = np.array(x[j, -CONTEXT:], dtype=np.float32)
                probs[owners[k][step]].append(float(out[j, 0]))
        result = [(0.0, probs[i]) for i in range(len(items))]
        for stream, idx in zip(streams, members, strict=True):
            for i in idx:
                if probs[i]:
                    stream.last_prob = float(np.mean(probs[i]))
                result[i] = (stream.last_prob, probs[i])
        return result


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(*, n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> NDArray[np.float32]:
    """(n_freqs, n_mels) triangular filters on the HTK mel scale, unnormalised.

    ``torchaudio.functional.melscale_fbanks`` with its defaults (``norm=None, mel_scale="htk"``),
    the same arithmetic in numpy; the weights agree to ~1e-6 (``tests/unit/test_inference_audio.py``).
    """
    freqs = np.linspace(0, sample_rate // 2, n_freqs, dtype=np.float32)
    mels = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    f_pts = (700.0 * (10.0 ** (mels / 2595.0) - 1.0)).astype(np.float32)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(np.float32(0.0), np.minimum(down, up)).astype(np.float32)


class LogMel:
    """Mean log-mel energy (dB) per band over a chunk: torchaudio's mel filterbank (in numpy), numpy STFT.

    (torchaudio's ``MelSpectrogram`` module costs tens of ms per call on a busy 2-core box;
    the same filterbank applied to a numpy power spectrum costs well under 1 ms.)
    """

    N_FFT = 400
    HOP = 160

    def __init__(self, *, n_mels: int = N_MELS) -> None:
        self.n_mels = n_mels
        self._fbank: NDArray[np.float32] | None = None
        self._window = np.hanning(self.N_FFT + 1)[:-1].astype(np.float32)

    def load(self) -> None:
        self._fbank = mel_filterbank(
            n_freqs=self.N_FFT // 2 + 1, f_min=50.0, f_max=7600.0, n_mels=self.n_mels, sample_rate=SAMPLE_RATE
        )

    def bands(self, wave: NDArray[np.float32]) -> list[float]:
        if self._fbank is None:
            raise RuntimeError("LogMel used before load()")
        if wave.size < self.N_FFT:
            wave = np.pad(wave, (0, self.N_FFT - wave.size))
        n = 1 + (wave.size - self.N_FFT) // self.HOP
        idx = np.arange(self.N_FFT)[None, :] + self.HOP * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(wave[idx] * self._window, axis=-1)) ** 2
        power = (spec @ self._fbank).mean(axis=0)
        return [round(float(v), 2) for v in 10.0 * np.log10(power + 1e-10)]
