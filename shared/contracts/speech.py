"""Speech segments waiting for transcription (Redis stream ``classpulse:speech:0``).

Producer: ``services.inference`` (the worker owning the participant's media shard segments its
audio with silero-vad and appends each closed speaking segment). Consumer: ``classpulse
transcribe`` workers, consumer group ``transcribe`` (any worker takes any segment: a segment is
self-contained, so no shard ownership is needed). The stream is bounded; a full stream evicts
its oldest segment (counted, ``classpulse_media_dropped_total{reason="speech_stream_full"}``).

The audio is personal data like the media streams: 16 kHz mono int16 PCM behind a small JSON
header (layout of :mod:`shared.contracts.codec`, magic ``CPS1``), deleted from the stream once
a transcribe worker acked it.
"""

from __future__ import annotations

import json
import struct
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.codec import DecodeError

SPEECH_MAGIC = b"CPS1"
SPEECH_RATE = 16000
MAX_SEGMENT_S = 30.0
_HEADER = struct.Struct("<4sI")


class SpeechSegmentMessage(BaseModel):
    """One closed speaking segment of one participant (times in seconds of their media)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: str = Field(min_length=1, max_length=128)
    participant: str = Field(min_length=1, max_length=128)
    role: Literal["student", "teacher"] = "student"
    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)
    speech_s: float = Field(ge=0.0, le=MAX_SEGMENT_S, description="Seconds the VAD found speech in.")
    epoch: float = Field(description="Capture time (epoch s) of media time 0 of this participant.")
    closed_at: float = Field(gt=0.0, description="Wall clock (epoch s) when the segmenter closed the segment.")
    sample_rate: Literal[16000] = 16000
    samples: bytes = Field(
        repr=False, max_length=int(MAX_SEGMENT_S * SPEECH_RATE) * 2, description="int16 little-endian mono PCM."
    )

    def waveform(self) -> NDArray[np.float32]:
        """The samples as float32 in [-1, 1]."""
        return np.frombuffer(self.samples, dtype="<i2").astype(np.float32) / 32768.0

    @classmethod
    def from_waveform(cls, wave: NDArray[np.float32], **header: object) -> SpeechSegmentMessage:
        pcm = np.clip(np.round(np.asarray(wave, dtype=np.float32) * 32768.0), -32768, 32767).astype("<i2")
        return cls(samples=pcm.tobytes(), **header)  # type: ignore[arg-type]


def encode_speech(msg: SpeechSegmentMessage) -> bytes:
    header = msg.model_dump_json(exclude={"samples"}).encode()
    return b"".join((_HEADER.pack(SPEECH_MAGIC, len(header)), header, msg.samples))


def decode_speech(data: bytes) -> SpeechSegmentMessage:
    """Decode one stream entry; raises :class:`DecodeError` (no values in the message) on anything malformed."""
    if len(data) < _HEADER.size:
        raise DecodeError("speech segment shorter than its header")
    magic, header_len = _HEADER.unpack_from(data)
    if magic != SPEECH_MAGIC:
        raise DecodeError(f"unknown speech segment magic {magic!r}; expected {SPEECH_MAGIC!r}")
    end = _HEADER.size + header_len
    if end > len(data):
        raise DecodeError("speech segment header length exceeds message size")
    try:
        header = json.loads(data[_HEADER.size : end])
    except ValueError as exc:
        raise DecodeError(f"speech segment header is not JSON: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise DecodeError("speech segment header is not a JSON object")
    header["samples"] = bytes(data[end:])
    if len(header["samples"]) % 2:
        raise DecodeError("speech segment payload is not whole int16 samples")
    try:
        msg = SpeechSegmentMessage.model_validate(header)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)[:5])
        raise DecodeError(f"speech segment header does not match the contract ({fields})") from None
    if msg.end < msg.start:
        raise DecodeError("speech segment ends before it starts")
    return msg


def speech_subject(data: bytes) -> tuple[str, str] | None:
    """``(session, participant)`` of an encoded segment, from its header only; None for anything else."""
    if len(data) < _HEADER.size:
        return None
    magic, header_len = _HEADER.unpack_from(data)
    if magic != SPEECH_MAGIC or _HEADER.size + header_len > len(data):
        return None
    try:
        header = json.loads(data[_HEADER.size : _HEADER.size + header_len])
        return str(header["session"]), str(header["participant"])
    except (ValueError, KeyError, TypeError):
        return None
