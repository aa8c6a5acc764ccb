"""Validation of WHIP SDP offers before aiortc sees them (aiortc accepts even ``v=0``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"^[a-z]=")
_RTPMAP = re.compile(r"^a=rtpmap:\d+ ([A-Za-z0-9_.-]+)/\d+")
VIDEO_CODECS = frozenset({"VP8", "H264"})
AUDIO_CODECS = frozenset({"OPUS"})
_SENDING = ("sendonly", "sendrecv")


class SdpError(ValueError):
    """The offer is malformed or unusable; the message tells the client what to fix."""


@dataclass
class MediaSection:
    kind: str
    direction: str = "sendrecv"
    codecs: list[str] = field(default_factory=list)
    port: int = 9


@dataclass(frozen=True)
class OfferSummary:
    """What a valid offer publishes."""

    has_video: bool
    has_audio: bool
    video_codecs: tuple[str, ...]
    audio_codecs: tuple[str, ...]


def _sections(lines: list[str]) -> tuple[list[str], list[tuple[MediaSection, list[str]]]]:
    session: list[str] = []
    media: list[tuple[MediaSection, list[str]]] = []
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"malformed SDP media line {line[:60]!r}; expected 'm=<kind> <port> <proto> <formats>'")
            media.append((MediaSection(kind=parts[0], port=int(parts[1].split("/")[0])), []))
        elif media:
            media[-1][1].append(line)
        else:
            session.append(line)
    return session, media


def validate_offer(text: str) -> OfferSummary:
    """Check an offer is a complete WebRTC offer publishing VP8/H.264 video and/or Opus audio."""
    body = text.strip()
    if not body:
        raise SdpError("the request body is empty; send an SDP offer")
    lines = [ln.strip() for ln in body.replace("\r\n", "\n").split("\n") if ln.strip()]
    if lines[0] != "v=0":
        raise SdpError("the body is not an SDP offer: it must start with 'v=0'")
    for line in lines:
        if not _LINE.match(line):
            raise SdpError(f"malformed SDP line {line[:60]!r}; every line must look like 'x=value'")
    session, sections = _sections(lines)
    for required in ("o=", "s=", "t="):
        if not any(ln.startswith(required) for ln in session):
            raise SdpError(f"SDP offer lacks its '{required}' line; send a complete offer from createOffer()")
    if not sections:
        raise SdpError("SDP offer has no media; add a camera (video) and/or microphone (audio) track")
    session_attrs = " ".join(session)
    summary_video: list[str] = []
    summary_audio: list[str] = []
    has_video = has_audio = False
    for section, attrs in sections:
        joined = session_attrs + " " + " ".join(attrs)
        for name, hint in (("a=ice-ufrag:", "ICE credentials"), ("a=ice-pwd:", "ICE credentials")):
            if name not in joined:
                raise SdpError(f"SDP {section.kind} section lacks {hint} ({name[:-1]}); send a WebRTC offer")
        if "a=fingerprint:" not in joined:
            raise SdpError(f"SDP {section.kind} section lacks a DTLS fingerprint; send a WebRTC offer")
        for attr in attrs:
            if attr[2:] in ("sendonly", "sendrecv", "recvonly", "inactive"):
                section.direction = attr[2:]
            match = _RTPMAP.match(attr)
            if match:
                section.codecs.append(match.group(1).upper())
        if section.kind not in ("audio", "video") or section.port == 0 or section.direction not in _SENDING:
            continue
        if section.kind == "video":
            usable = [c for c in section.codecs if c in VIDEO_CODECS]
            if not usable:
                offered = ", ".join(sorted(set(section.codecs))) or "none"
                raise SdpError(f"video codecs offered ({offered}) are not supported; offer VP8 or H.264")
            has_video = True
            summary_video.extend(usable)
        else:
            usable = [c for c in section.codecs if c in AUDIO_CODECS]
            if not usable:
                offered = ", ".join(sorted(set(section.codecs))) or "none"
                raise SdpError(f"audio codecs offered ({offered}) are not supported; offer Opus")
            has_audio = True
            summary_audio.extend(usable)
    if not has_video and not has_audio:
        raise SdpError(
            "SDP offer sends no audio or video (all sections recvonly/inactive); publish with sendonly tracks"
        )
    return OfferSummary(
        has_video=has_video,
        has_audio=has_audio,
        video_codecs=tuple(dict.fromkeys(summary_video)),
        audio_codecs=tuple(dict.fromkeys(summary_audio)),
    )
