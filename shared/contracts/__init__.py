"""Versioned message contracts (one model per stream/topic) and their encodings."""

from shared.contracts.codec import DecodeError, EventCodec, decode_media, encode_media
from shared.contracts.events import (
    Alert,
    ClassAggregate,
    FeatureSnapshot,
    LifecycleEvent,
    ParticipantWindow,
    Role,
    ScoreEvent,
    WindowRef,
)
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import StageStamp, TimingTrail, wall_clock

__all__ = [
    "Alert",
    "AudioChunk",
    "ClassAggregate",
    "DecodeError",
    "EventCodec",
    "FeatureSnapshot",
    "LifecycleEvent",
    "MediaMessage",
    "ParticipantWindow",
    "Role",
    "ScoreEvent",
    "StageStamp",
    "TimingTrail",
    "VideoFrame",
    "WindowRef",
    "decode_media",
    "encode_media",
    "wall_clock",
]
