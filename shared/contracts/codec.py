"""Wire encodings: JSON for events, a compact binary frame for media.

Media layout (little-endian)::

    b"CPM1" | u32 header_len | header JSON (all fields but the payload) | payload bytes

The payload is the raw pixels or samples, so a 640x480 frame costs 921,600 bytes plus a
few hundred bytes of header, with no base64.
"""

from __future__ import annotations

import json
import struct
from typing import Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame

MAGIC = b"CPM1"
_HEADER = struct.Struct("<4sI")

E = TypeVar("E", bound=BaseModel)


class DecodeError(ValueError):
    """A message on the wire does not match its contract."""


def encode_media(msg: MediaMessage) -> bytes:
    """Encode a video frame or audio chunk to the binary media format."""
    payload_field = "pixels" if isinstance(msg, VideoFrame) else "samples"
    header = msg.model_dump_json(exclude={payload_field}).encode()
    payload: bytes = getattr(msg, payload_field)
    return b"".join((_HEADER.pack(MAGIC, len(header)), header, payload))


_media_adapter: TypeAdapter[MediaMessage] = TypeAdapter(MediaMessage)


def decode_media(data: bytes) -> MediaMessage:
    """Decode the binary media format; raises :class:`DecodeError` on anything malformed."""
    if len(data) < _HEADER.size:
        raise DecodeError("media message shorter than its header")
    magic, header_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"unknown media magic {magic!r}; expected {MAGIC!r}")
    start = _HEADER.size
    end = start + header_len
    if end > len(data):
        raise DecodeError("media header length exceeds message size")
    try:
        header = json.loads(data[start:end])
    except ValueError as exc:
        raise DecodeError(f"media header is not JSON: {exc}") from exc
    payload = bytes(data[end:])
    kind = header.get("kind")
    if kind == "video":
        header["pixels"] = payload
    elif kind == "audio":
        header["samples"] = payload
    else:
        raise DecodeError(f"unknown media kind {kind!r}")
    try:
        msg = _media_adapter.validate_python(header)
    except ValidationError as exc:
        raise DecodeError(f"media header does not match the contract: {exc}") from exc
    if isinstance(msg, VideoFrame) and len(msg.pixels) != msg.width * msg.height * 3:
        raise DecodeError("video payload size does not match width*height*3")
    if isinstance(msg, AudioChunk) and len(msg.samples) % 4:
        raise DecodeError("audio payload is not whole float32 samples")
    return msg


def media_subject(data: bytes) -> tuple[str, str]:
    """``(session, participant)`` of an encoded media message, from its header only (no payload copy)."""
    if len(data) < _HEADER.size:
        raise DecodeError("media message shorter than its header")
    magic, header_len = _HEADER.unpack_from(data)
    if magic != MAGIC or _HEADER.size + header_len > len(data):
        raise DecodeError("not a media message")
    try:
        header = json.loads(data[_HEADER.size : _HEADER.size + header_len])
        return str(header["session"]), str(header["participant"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"media header without session/participant: {type(exc).__name__}") from None


class EventCodec(Generic[E]):
    """JSON codec bound to one event model."""

    def __init__(self, model: type[E]) -> None:
        self.model = model

    def encode(self, event: E) -> bytes:
        return event.model_dump_json().encode()

    def decode(self, data: bytes) -> E:
        try:
            return self.model.model_validate_json(data)
        except ValidationError as exc:
            raise DecodeError(f"{self.model.__name__} does not match the contract: {_where(exc)}") from None


def _where(exc: ValidationError) -> str:
    """What is wrong, without the input values (a message may carry personal data, e.g. chat text)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
