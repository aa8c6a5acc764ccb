"""The signal registry: every signal ClassPulse measures or reports, declared once.

Two tables, each in a fixed order:

* :data:`INPUTS` -- the fusion model's per-step input vector. The order here **is** the
  layout (``services.inference.fusion.SIGNALS``), so weight files and scores stay
  comparable; append new signals at the end. Each entry carries its evidence gate prior
  (where the value turns from "no" to "yes" evidence, in its own unit) and the evidence
  assumed while it is not measured.
* :data:`OUTPUTS` -- the behaviour signals of a score event and of a timeline row
  (``present`` ... ``confidence``), with a description a teacher can read and the badge
  text the dashboard shows. Those with ``head=True`` are the fusion model's heads.

Everything that lists signals derives from these tables: the fusion layout and its weight
files, training, the gateway's live rows, the dashboard (the registry is rendered into
its page), replay's CSV columns and HTML strips.

Adding an input signal is one entry in :data:`INPUTS`; the step builder then fills it in
(the ``text`` signals from chat, Q&A and transcripts are ``optional``: see
:attr:`InputSignal.optional`). Weights saved before it refuse to load with a message
naming the new signal (retrain with ``classpulse train``). Adding an output signal also
needs its field on the versioned contracts (``ScoreEvent``, ``TimelineRow``); a unit test
fails until they match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Modality = Literal["video", "audio", "text", "context"]
"""Where a signal's evidence comes from; ``context`` = the participant's own controls (camera, mic)."""
OutputKind = Literal["flag", "level"]
"""``flag``: true/false per step (majority vote per second); ``level``: 0..1 (mean per second)."""


@dataclass(frozen=True, kw_only=True)
class Gate:
    """Prior evidence gate of an input: ``sigmoid(direction * (value - centre) / scale)``."""

    centre: float
    scale: float
    direction: float
    """+1: more of the value is more evidence; -1: less of it is."""


@dataclass(frozen=True, kw_only=True)
class InputSignal:
    """One entry of the fusion input vector."""

    name: str
    modality: Modality
    unit: str
    description: str
    gate: Gate
    missing_evidence: float = 0.0
    """The default: evidence (0..1) the model assumes while the signal is not measured (its
    measured flag is 0 then, and the vector's value is ignored)."""
    optional: bool = False
    """Absent for most participants (text: only those who write or are transcribed). While
    unmeasured it carries exactly no evidence (``missing_evidence`` must be 0) and the fusion
    model evaluates the optional signals as their own block, so a participant without them
    scores bit-identically to a build without these signals."""


@dataclass(frozen=True, kw_only=True)
class OutputSignal:
    """One behaviour signal of a score event and a timeline row."""

    name: str
    kind: OutputKind
    modalities: tuple[Modality, ...]
    unit: str
    description: str
    head: bool
    """Produced by a fusion head (``present`` and ``confidence`` are computed beside the heads)."""
    default: bool | float
    """Value of a second in which nothing was observed."""
    badge_on: str | None = None
    """Dashboard badge while the flag is true (flags only)."""
    badge_off: str | None = None
    """Dashboard badge while the flag is false; None: no badge then."""


_FLAG = Gate(centre=0.5, scale=0.05, direction=1.0)
"""Gate of a 0/1 input: evidence when the flag is set."""

TEXT_QUESTION_S = 30.0
"""How long a question counts for ``asked_question`` (seconds of wall/capture time)."""
TEXT_ACTIVITY_S = 60.0
"""The window of ``chat_activity`` (seconds)."""

MEL_BANDS = 8
"""Log-mel bands of the audio features (``services.inference.features_audio.N_MELS``)."""


def _mel_bands(count: int) -> tuple[InputSignal, ...]:
    return tuple(
        InputSignal(
            name=f"mel_{i}",
            modality="audio",
            unit="dB",
            description=f"Log-mel band {i} of {count} (50-7600 Hz) of the participant's audio; no prior weight.",
            gate=Gate(centre=-60.0, scale=10.0, direction=1.0),
        )
        for i in range(count)
    )


INPUTS: tuple[InputSignal, ...] = (
    InputSignal(
        name="face_present", modality="video", unit="0/1", gate=_FLAG,
        description="A face is in frame (camera on).",
    ),
    InputSignal(
        name="head_yaw", modality="video", unit="deg", gate=Gate(centre=20.0, scale=2.0, direction=-1.0),
        description="|Head yaw - the participant's own baseline|; the +/- 20 deg attention cone.",
    ),
    InputSignal(
        name="head_pitch", modality="video", unit="deg", gate=Gate(centre=20.0, scale=2.0, direction=-1.0),
        description="|Head pitch - the participant's own baseline|; the +/- 20 deg attention cone.",
    ),
    InputSignal(
        name="eyes_open", modality="video", unit="EAR", gate=Gate(centre=0.15, scale=0.015, direction=1.0),
        description="Eye aspect ratio; below 0.15 reads as closed.",
    ),
    InputSignal(
        name="gaze", modality="video", unit="0..1", gate=Gate(centre=0.65, scale=0.05, direction=-1.0),
        missing_evidence=1.0,
        description="Horizontal iris offset from the eye centre (0 centred, 1 at a corner); unmeasured = on screen.",
    ),
    InputSignal(
        name="mouth_activity", modality="video", unit="0..1", gate=Gate(centre=0.03, scale=0.01, direction=1.0),
        description="Recent variation of the lip gap (talking, chewing).",
    ),
    InputSignal(
        name="hand_raised", modality="video", unit="0/1", gate=_FLAG,
        description="A wrist is above its shoulder line.",
    ),
    InputSignal(
        name="motion", modality="video", unit="0..1", gate=Gate(centre=0.02, scale=0.01, direction=1.0),
        description="Mean change between grey thumbnails of consecutive frames.",
    ),
    InputSignal(
        name="voice", modality="audio", unit="0..1", gate=_FLAG,
        description="Silero VAD speech probability of the participant's own microphone.",
    ),
    InputSignal(
        name="audio_level", modality="audio", unit="dBFS", gate=Gate(centre=-50.0, scale=3.0, direction=1.0),
        description="RMS level of the participant's audio.",
    ),
    InputSignal(
        name="camera_on", modality="context", unit="0/1", gate=_FLAG,
        description="The participant's camera is on.",
    ),
    InputSignal(
        name="mic_on", modality="context", unit="0/1", gate=_FLAG,
        description="The participant's microphone is on (audio arrives).",
    ),
    *_mel_bands(MEL_BANDS),
    InputSignal(
        name="asked_question", modality="text", unit="0/1", gate=_FLAG, optional=True,
        description=f"Asked a question (chat, Q&A or speech) in the last {TEXT_QUESTION_S:g} s.",
    ),
    InputSignal(
        name="chat_activity", modality="text", unit="events", gate=Gate(centre=0.5, scale=0.1, direction=1.0),
        optional=True,
        description=f"Chat messages, answers, poll answers, reactions and hand-raise clicks in the last "
        f"{TEXT_ACTIVITY_S:g} s.",
    ),
)
"""Fusion input signals, in the order of the feature vector (append new ones at the end)."""

OUTPUTS: tuple[OutputSignal, ...] = (
    OutputSignal(
        name="present", kind="flag", modalities=("video",), unit="yes/no", head=False, default=False,
        badge_on="present", badge_off="away",
        description="The participant's face is in front of the camera.",
    ),
    OutputSignal(
        name="attentive", kind="flag", modalities=("video",), unit="yes/no", head=True, default=False,
        badge_on="attentive", badge_off="not attentive",
        description="Present and facing the screen with eyes open (head within the attention cone).",
    ),
    OutputSignal(
        name="speaking", kind="flag", modalities=("audio", "context"), unit="yes/no", head=True, default=False,
        badge_on="speaking", badge_off="silent",
        description="The participant's voice is heard on their own microphone.",
    ),
    OutputSignal(
        name="hand_raised", kind="flag", modalities=("video",), unit="yes/no", head=True, default=False,
        badge_on="✋ hand raised",
        description="The participant holds a hand up (a wrist above the shoulder).",
    ),
    OutputSignal(
        name="engagement", kind="level", modalities=("video", "audio", "context", "text"), unit="0..1", head=True,
        default=0.0,
        description="How much the participant takes part: present, facing the screen, speaking, raising a hand, "
        "asking and writing.",
    ),
    OutputSignal(
        name="confidence", kind="level", modalities=("video", "audio", "context"), unit="0..1", head=False,
        default=0.0,
        description="How sure ClassPulse is: how much was measured and how clear-cut the signals were.",
    ),
)
"""Behaviour signals of a score event / timeline row, in the order of the timeline's columns."""

INPUT_NAMES: tuple[str, ...] = tuple(s.name for s in INPUTS)
HEAD_NAMES: tuple[str, ...] = tuple(s.name for s in OUTPUTS if s.head)
OUTPUT_NAMES: tuple[str, ...] = tuple(s.name for s in OUTPUTS)
FLAG_NAMES: tuple[str, ...] = tuple(s.name for s in OUTPUTS if s.kind == "flag")


def registry_document() -> dict[str, Any]:
    """The registry as JSON-ready data (served to the dashboard); gate priors stay with the model."""
    return {
        "inputs": [
            {"name": s.name, "modality": s.modality, "unit": s.unit, "description": s.description} for s in INPUTS
        ],
        "outputs": [
            {
                "name": s.name,
                "kind": s.kind,
                "modalities": list(s.modalities),
                "unit": s.unit,
                "description": s.description,
                "head": s.head,
                "default": s.default,
                "badge_on": s.badge_on,
                "badge_off": s.badge_off,
            }
            for s in OUTPUTS
        ],
    }
