"""Audio chunks without torch: PyAV's resampler against the torchaudio path it replaced.

The reference is the chunker ingest used before (channel mean, then each 0.5 s block
resampled on its own by ``torchaudio.transforms.Resample``), computed here with torchaudio.
The new chunker must give the same chunk boundaries, media times and seq, a waveform within
a small tolerance, and the same speaking segments; and serving ingest must not load torch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from services.ingest.sampling import AudioChunker
from shared.contracts.media import AudioChunk
from shared.contracts.timing import TimingTrail
from shared.testkit.speech import espeak, segments, speech_scene, trim

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEXT = "Good morning everyone, I have a question about the homework. Yes, I think the answer is forty two."
# (rate, layout, sample format, samples per frame): aiortc's Opus decoder, an AAC file, a 16 kHz
# PCM file (s16: conversion only; flt mono: passed through untouched), an odd-rate mono file.
SOURCES = [
    (48_000, "stereo", "s16", 960),
    (44_100, "stereo", "fltp", 1024),
    (16_000, "mono", "s16", 320),
    (16_000, "mono", "flt", 320),
    (22_050, "mono", "fltp", 1024),
]
Wave = NDArray[np.float32]


def _channels(mono: Wave, layout: str) -> list[Wave]:
    """Speech on the left, a quieter delayed copy on the right: the downmix matters."""
    left = (0.6 * mono / float(np.abs(mono).max())).astype(np.float32)
    return [left, (0.3 * np.roll(left, 100)).astype(np.float32)] if layout == "stereo" else [left]


def _quantise(channels: list[Wave], fmt: str) -> list[Wave]:
    """What the samples are once stored as ``fmt`` (int16 rounds them)."""
    if fmt != "s16":
        return channels
    return [(np.round(c * 32767).astype(np.int16).astype(np.float32) / 32768).astype(np.float32) for c in channels]


def _frames(channels: list[Wave], *, rate: int, layout: str, fmt: str, size: int) -> list[av.AudioFrame]:
    out = []
    n = len(channels[0]) - len(channels[0]) % size
    for i in range(0, n, size):
        parts = [c[i : i + size] for c in channels]
        if fmt == "s16":
            data = np.stack([np.round(p * 32768).astype(np.int16) for p in parts], axis=1).reshape(1, -1)
        elif fmt == "flt":
            data = np.stack(parts, axis=1).reshape(1, -1).astype(np.float32)
        else:
            data = np.stack(parts).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = i
        out.append(frame)
    return out


def _chunk(
    frames: Sequence[av.AudioFrame], *, chunk_s: float = 0.5, skip: frozenset[int] = frozenset()
) -> tuple[AudioChunker, list[AudioChunk]]:
    chunker = AudioChunker(session="s", participant="p", chunk_s=chunk_s)
    out: list[AudioChunk] = []
    for k, frame in enumerate(frames):
        if k in skip:
            continue
        t = float(frame.pts) / frame.sample_rate
        out += chunker.push(frame, media_time=t, capture_ts=1000.0 + t, received=1000.05 + t)
    return chunker, out + chunker.flush()


def torchaudio_reference(mono: Wave, rate: int, chunk_s: float = 0.5) -> list[tuple[float, Wave]]:
    """The chunks as ingest made them with torchaudio: ``(media_time, 16 kHz waveform)``."""
    import torch
    from torchaudio.transforms import Resample

    block = round(chunk_s * rate)
    resample = None if rate == 16_000 else Resample(rate, 16_000)
    out = []
    for k in range(len(mono) // block):
        wave = mono[k * block : (k + 1) * block]
        if resample is not None:
            with torch.no_grad():
                wave = resample(torch.from_numpy(np.ascontiguousarray(wave))).numpy()
        out.append((k * block / rate, np.clip(wave, -1.0, 1.0).astype(np.float32)))
    return out


@pytest.mark.parametrize(("rate", "layout", "fmt", "size"), SOURCES)
def test_chunks_match_the_torchaudio_path(rate: int, layout: str, fmt: str, size: int) -> None:
    channels = _quantise(_channels(trim(espeak(TEXT, rate=rate)), layout), fmt)
    frames = _frames(channels, rate=rate, layout=layout, fmt=fmt, size=size)
    chunker, got = _chunk(frames)
    fed = len(frames) * size
    ref = torchaudio_reference(np.mean(np.stack(channels), axis=0).astype(np.float32)[:fed], rate)
    assert len(ref) >= 8
    assert len(got) == len(ref) and chunker.gaps == 0
    assert [c.seq for c in got] == list(range(len(ref)))
    assert [c.media_time for c in got] == pytest.approx([t for t, _ in ref], abs=1e-9)
    for chunk, (t, _) in zip(got, ref, strict=True):
        assert chunk.sample_rate == 16_000 and chunk.duration == 0.5 and len(chunk.waveform()) == 8000
        assert chunk.timing.capture_ts == pytest.approx(1000.0 + t + 0.5)  # its last sample's capture time
    mine = np.concatenate([c.waveform() for c in got])
    theirs = np.concatenate([w for _, w in ref])
    error = mine - theirs
    # Both are band-limited sinc resamplers; they differ near Nyquist (cutoff 0.97 vs 0.99) and at
    # the torchaudio blocks' zero-padded edges. Measured: < 0.9 % RMS, < 0.015 peak on 0.6 peak speech.
    assert float(np.sqrt(np.mean(error**2)) / np.sqrt(np.mean(theirs**2))) < 0.02
    assert float(np.abs(error).max()) < 0.03
    if rate == 16_000:  # no rate change: the samples themselves
        assert float(np.abs(error).max()) < 1e-6


def test_the_last_chunk_waits_for_the_next_frame_or_the_end_of_the_stream() -> None:
    channels = _channels(trim(espeak(TEXT, rate=48_000)), "stereo")
    frames = _frames(channels, rate=48_000, layout="stereo", fmt="fltp", size=960)[:50]  # exactly 1.0 s
    chunker = AudioChunker(session="s", participant="p")
    counts = [len(chunker.push(f, media_time=k * 0.02, capture_ts=k * 0.02)) for k, f in enumerate(frames)]
    # frame 25 (0.50 s) completes chunk 0 but the resampler's ~1 ms look-ahead is still held back
    assert counts.index(1) == 25 and sum(counts) == 1
    assert chunker.pending_start == pytest.approx(0.5)
    last = chunker.flush()
    assert [c.media_time for c in last] == [0.5] and len(last[0].waveform()) == 8000
    assert chunker.pending_start is None and chunker.flush() == []


def test_a_lost_packet_is_filled_and_a_long_gap_restarts_on_the_new_time() -> None:
    channels = _channels(trim(espeak(TEXT, rate=48_000)), "stereo")
    frames = _frames(channels, rate=48_000, layout="stereo", fmt="s16", size=960)[:150]  # 3 s
    chunker, got = _chunk(frames, skip=frozenset({30}))  # one 20 ms Opus packet lost at 0.6 s
    assert chunker.gaps == 0 and chunker.filled_s == pytest.approx(0.02)
    assert [c.media_time for c in got] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])

    chunker, got = _chunk(frames, skip=frozenset(range(35, 60)))  # 0.5 s missing from 0.7 s
    assert chunker.gaps == 1 and chunker.filled_s == 0.0
    # chunk 1 (0.5 s..) was partial when the gap came: dropped; a new run starts at 1.2 s
    assert [c.media_time for c in got] == pytest.approx([0.0, 1.2, 1.7, 2.2])
    assert [c.seq for c in got] == [0, 1, 2, 3]


def test_a_change_of_rate_starts_a_new_run() -> None:
    a = _frames([np.zeros(48_000, np.float32)], rate=48_000, layout="mono", fmt="flt", size=960)
    b = _frames([np.zeros(16_000, np.float32)], rate=16_000, layout="mono", fmt="s16", size=320)
    chunker = AudioChunker(session="s", participant="p")
    out = []
    for f in a:
        out += chunker.push(f, media_time=float(f.pts) / 48_000, capture_ts=0.0)
    for f in b:
        out += chunker.push(f, media_time=1.0 + float(f.pts) / 16_000, capture_ts=0.0)
    out += chunker.flush()
    assert chunker.gaps == 0
    assert [c.media_time for c in out] == pytest.approx([0.0, 1.0, 1.5])  # the 48 kHz run's 2nd half is dropped
    assert all(len(c.waveform()) == 8000 for c in out)


def _speaking(msgs: list[AudioChunk]) -> list[tuple[float, float]]:
    from services.inference.engine import InferenceEngine
    from services.inference.settings import InferenceSettings
    from tests.unit.test_inference_audio import NoVideo, merged

    engine = InferenceEngine(settings=InferenceSettings(), backend=NoVideo())
    engine.load()
    events = sorted(engine.process(msgs) + engine.flush(), key=lambda e: e.media_time)
    assert len(events) == len(msgs)
    return merged(segments([e.media_time for e in events], [e.speaking for e in events], 0.1))


def _as_chunks(ref: list[tuple[float, Wave]]) -> list[AudioChunk]:
    return [
        AudioChunk.from_waveform(
            wave,
            sample_rate=16_000,
            session="s",
            participant="p",
            seq=k,
            media_time=t,
            timing=TimingTrail(capture_ts=t),
        )
        for k, (t, wave) in enumerate(ref)
    ]


@pytest.mark.parametrize(("rate", "layout", "fmt", "size"), [SOURCES[0], SOURCES[1]])
def test_speaking_segments_are_unchanged(rate: int, layout: str, fmt: str, size: int) -> None:
    utterances = [(1.0, "Good morning everyone, I have a question about the homework."), (7.5, "Yes, forty two.")]
    wave, truth = speech_scene(utterances, seconds=11.0, snr_db=10.0, seed=3, rate=rate)
    channels = _quantise([wave, (0.5 * wave).astype(np.float32)] if layout == "stereo" else [wave], fmt)
    frames = _frames(channels, rate=rate, layout=layout, fmt=fmt, size=size)
    _, got = _chunk(frames, chunk_s=0.1)
    fed = len(frames) * size
    ref = torchaudio_reference(np.mean(np.stack(channels), axis=0).astype(np.float32)[:fed], rate, chunk_s=0.1)
    assert len(got) == len(ref)
    found, before = _speaking(got), _speaking(_as_chunks(ref))
    assert len(found) == len(before) == len(truth), (found, before, truth)
    for (fa, fb), (ba, bb), (ta, tb) in zip(found, before, truth, strict=True):
        assert abs(fa - ba) <= 0.3 and abs(fb - bb) <= 0.3, (found, before)
        assert abs(fa - ta) <= 0.3 and abs(fb - tb) <= 0.3, (found, truth)


# Every module `classpulse ingest` imports to serve: the CLI, the single process, a worker, the
# supervisor, WHIP + tracks + sampling, the file source and `simulate`.
INGEST_MODULES = (
    "services.cli",
    "services.ingest.cli",
    "services.ingest.service",
    "services.ingest.app",
    "services.ingest.whip",
    "services.ingest.tracks",
    "services.ingest.sampling",
    "services.ingest.worker",
    "services.ingest.supervisor",
    "services.ingest.sources.file",
    "services.ingest.simulate",
    "services.up.cli",
    "services.up.ingest_worker",
    "services.up.ingest_pool",
    "shared.transport.relay",
    "shared.service",
    "shared.serving",
    "shared.torch_threads",
    "shared.transport.factory",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "CLASSPULSE_TOKEN_SECRET": "no-torch-test",
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }


def test_importing_the_ingest_path_does_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {INGEST_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "import services.cli\n"
        "services.cli.build_parser(); services.cli.register_all_settings()\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'mediapipe') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_ingest_process_of_up_has_no_torch_loaded(tmp_path: Path) -> None:
    """`classpulse up`'s ingest processes (relaying to the main process) stay small: no inference imports."""
    relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the main process's relay: accepting is enough
    relay.bind(str(tmp_path / "relay.sock"))
    relay.listen(4)
    cmd = [sys.executable, "-m", "services.cli", "up", "--ingest-worker", "0", "--runtime-dir", str(tmp_path),
           "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "worker-0.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "worker-0.json").exists(), f"the ingest process did not serve (exit {proc.poll()})"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/torch/" not in maps and "mediapipe" not in maps
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        assert rss_kb < 400 * 1024, f"{rss_kb // 1024} MB RSS"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        relay.close()


def test_a_serving_ingest_process_has_no_torch_loaded() -> None:
    cmd = [sys.executable, "-m", "services.cli", "ingest", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ingest listening on" in line, line
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/torch/" not in maps and "torchaudio" not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize(("rate", "layout", "fmt", "size"), [SOURCES[0], SOURCES[1], SOURCES[4]])
def test_frames_are_resampled_in_blocks_with_the_per_frame_output(rate: int, layout: str, fmt: str, size: int) -> None:
    """About two resampler calls per chunk instead of one per 20 ms frame, and the same stream out."""
    channels = _quantise(_channels(trim(espeak(TEXT, rate=rate)), layout), fmt)
    frames = _frames(channels, rate=rate, layout=layout, fmt=fmt, size=size)
    chunker, got = _chunk(frames)
    assert len(got) >= 8
    assert chunker.resample_calls <= 2 * len(got) + 2 < len(frames) / 5
    one_by_one = av.AudioResampler(format="flt", layout="mono", rate=16_000, options={"rematrix_maxval": "1.0"})
    outs = [o for f in frames for o in one_by_one.resample(f)] + list(one_by_one.resample(None))
    reference = np.concatenate([o.to_ndarray().reshape(-1)[: o.samples] for o in outs if o is not None])
    mine = np.concatenate([c.waveform() for c in got])
    assert np.abs(mine - np.clip(reference[: len(mine)], -1.0, 1.0)).max() < 1e-5
