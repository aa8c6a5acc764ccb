"""``classpulse replay`` (a recording or a past session's Kafka log -> report) and ``classpulse demo``.

Handlers import the heavy modules (PyAV, mediapipe, torch) lazily. Errors a user can fix
print one line on stderr and exit 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="analyse a recording, a class (folder or manifest.json of per-participant recordings) or a past "
        "live session's Kafka events into report.json/.html/timeline.csv",
        description=(
            "Analyse a recorded class (mp4/webm/mkv; H.264, VP8/VP9, AV1; audio optional) faster than real time: "
            "one recording of one person, a folder with one recording per participant (id = file name), or a "
            "manifest.json listing them with roles and start offsets; or rebuild a past live session's report "
            "from its Kafka score events. Writes DIR/report.json, DIR/report.html and DIR/timeline.csv."
        ),
    )
    p.add_argument("input", nargs="?", help="recording (file or URL PyAV opens), folder of per-participant "
                   "recordings, or manifest.json; omit with --from-kafka")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: ./<input name>-report; a class: ./<session>-report)")
    p.add_argument("--session", default=None, help="session id (default: the file or folder name, or the "
                   "manifest's session; required with --from-kafka)")
    p.add_argument("--participant", default=None,
                   help="participant id of the person in a single recording (default p1)")
    p.add_argument("--role", choices=["student", "teacher"], default=None,
                   help="their role in a single recording (default student)")
    p.add_argument("--teacher", default=None, metavar="ID",
                   help="folder mode: the recording (file name without suffix) of the teacher; the rest are students")
    p.add_argument("--layout", choices=["single", "gallery"], default="single",
                   help="gallery: the recording is a gallery view (a grid of tiles, mixed audio); one participant per "
                   "tile (ids p1..pN row by row), speech attributed to the face whose mouth moves with the voice")
    p.add_argument("--from-kafka", action="store_true", help="rebuild from the session's stored score events")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default CLASSPULSE_KAFKA_BOOTSTRAP)")
    p.add_argument("--topic", default=None, help="score topic (default classpulse.scores)")
    p.add_argument("--chat", type=Path, default=None, metavar="FILE",
                   help="interaction events (chat, questions, polls ...) to merge into the report: JSON Lines, "
                   "one InteractionEvent per line with ts in seconds from the recording start")
    p.add_argument("--transcripts", action="store_true",
                   help="keep what each participant said in report.json's transcript, and the text of --chat questions "
                   "in its question list (personal data; words_spoken and questions are counted without it too)")
    p.add_argument("--opt-out", default=None, metavar="ID[,ID...]",
                   help="class replay: leave these participants out (their recordings are never opened; the report "
                   "lists them only under privacy.opted_out); a manifest entry can say \"opt_out\": true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=_replay, exit_now=True)

    p = sub.add_parser(
        "demo",
        help="make a sample class recording (photo + espeak-ng speech), replay it and print where the report is",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="folder for sample.mp4 and the report (default: a new temp dir)",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="length of the sample clip (10..600 s, default 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=_demo)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _quiet_native_logs() -> None:
    """Keep mediapipe/TFLite/absl chatter and deprecation warnings off the user's terminal."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _setup() -> None:
    from shared.log import setup_logging
    from shared.settings import CommonSettings

    common = CommonSettings()
    setup_logging(level="WARNING" if common.log_level == "INFO" else common.log_level, json_lines=common.log_json,
                  redact_pii=common.log_redact_pii)
    _quiet_native_logs()


def _mute_native() -> bool:
    """Mute C++ chatter on stderr during analysis unless the user asked for debug logs."""
    from shared.settings import CommonSettings

    return CommonSettings().log_level != "DEBUG"


def _print_outcome(paths: Any, report: Any, extra: str = "") -> None:
    print(f"report: {paths.html}")
    print(f"        {paths.json}")
    print(f"        {paths.csv}")
    if extra:
        print(extra)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _replay(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from shared.settings import SettingsError

    try:
        _setup()
        if args.transcripts:
            from services.inference.transcribe.settings import TranscribeSettings

            if args.from_kafka:
                return _fail("--transcripts transcribes recordings; a past live session's events carry no audio")
            if not TranscribeSettings().enabled:
                return _fail("--transcripts needs transcription; unset CLASSPULSE_TRANSCRIBE_ENABLED=false")
        if args.opt_out and not _is_class(args):
            return _fail("--opt-out leaves participants out of a class replay (a folder or manifest.json); a single "
                         "or gallery recording of someone who opted out should not be replayed at all")
        if args.from_kafka:
            if args.chat is not None:
                return _fail("--chat merges a chat file into a recording's replay; it does not go with --from-kafka")
            return _replay_kafka(args)
        if args.layout == "gallery":
            return _replay_gallery(args)
        if args.input is not None:
            from services.replay.class_inputs import is_class_input

            if is_class_input(args.input):
                return _replay_class(args)
        return _replay_file(args)
    except (SettingsError, ValidationError) as exc:
        return _fail(f"invalid ClassPulse settings: {exc}".splitlines()[0] + "; see `classpulse check-config`")


def _is_class(args: argparse.Namespace) -> bool:
    from services.replay.class_inputs import is_class_input

    return bool(args.input) and not args.from_kafka and args.layout != "gallery" and is_class_input(args.input)


T = TypeVar("T")


def _replay_file(args: argparse.Namespace) -> int:
    from services.replay.files import media_name, replay_file

    if args.input is None:
        return _fail("give a recording to analyse (classpulse replay FILE --out DIR) or use --from-kafka --session ID")
    if args.teacher is not None:
        return _fail("--teacher names the teacher among a folder's recordings; for one recording use --role teacher")
    out = args.out or Path(f"{Path(media_name(args.input)).stem or 'replay'}-report")
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out} is a file; give a folder for the report")
    outcome = _guarded(args, out, lambda: replay_file(
        args.input, out_dir=out, session=args.session, participant=args.participant or "p1",
        role=args.role or "student", show_progress=not args.no_progress, quiet_native=_mute_native(),
        chat=args.chat,
        transcripts=args.transcripts,
    ))
    if isinstance(outcome, int):
        return outcome
    s = outcome.stats
    _print_outcome(
        outcome.paths, outcome.report,
        f"{s.media_s:.1f} s of media analysed in {s.wall_s:.1f} s ({s.realtime_factor:.1f}x real time), "
        f"{s.frames} frames, {s.audio_chunks} audio chunks, {s.speech_events} speech segments transcribed",
    )
    return 0


def _guarded(args: argparse.Namespace, out: Path, run: Callable[[], T]) -> T | int:
    """Run a replay; a failure becomes one readable line and its exit status (details at DEBUG)."""
    from services.inference.transcribe.model import ModelError
    from services.ingest.sources.errors import MediaSourceError
    from services.replay.chat import ChatFileError
    from shared.text.embeddings import EncoderUnavailable

    try:
        return run()
    except MediaSourceError as exc:
        return _fail(exc.message)
    except (ChatFileError, EncoderUnavailable, ModelError) as exc:
        return _fail(str(exc))
    except PermissionError as exc:
        return _fail(f"cannot write the report to {out} ({exc.strerror}); choose a writable folder with --out")
    except Exception as exc:  # the user gets one line; details go to the log at DEBUG
        from shared.log import get_logger

        get_logger(__name__).debug("replay failed (%s)", type(exc).__name__, exc_info=exc)
        return _fail(
            f"replay of {args.input} failed unexpectedly; run again with CLASSPULSE_LOG_LEVEL=DEBUG for the details "
            "and report them (see SECURITY.md for how)",
            EXIT_FAILED,
        )


def _replay_class(args: argparse.Namespace) -> int:
    from services.replay.class_inputs import ClassInputError, leave_out, load_class_input
    from services.replay.files import class_session_id, replay_class

    if args.participant is not None or args.role is not None:
        return _fail("--participant/--role describe the one person of a single recording; in a class the ids come "
                     "from the file names or the manifest (folder mode: --teacher ID)")
    try:
        spec = load_class_input(args.input, teacher=args.teacher)
        spec, opted_out = leave_out(spec, args.opt_out)
    except ClassInputError as exc:
        return _fail(str(exc))
    out = args.out or Path(f"{class_session_id(spec, args.session)}-report")
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out} is a file; give a folder for the report")
    outcome = _guarded(args, out, lambda: replay_class(
        spec, out_dir=out, session=args.session, show_progress=not args.no_progress, quiet_native=_mute_native(),
        chat=args.chat,
        transcripts=args.transcripts,
    ))
    if isinstance(outcome, int):
        return outcome
    if opted_out:
        from services.replay.report_files import write_report
        from shared.contracts.report import ReportPrivacy

        report = outcome.report.model_copy(update={"privacy": ReportPrivacy(opted_out=opted_out)})
        outcome = dataclasses.replace(outcome, report=report, paths=write_report(report, out))
    s = outcome.stats
    _print_outcome(
        outcome.paths, outcome.report,
        f"{s.tracks} recordings ({s.recordings_s:.1f} s of media), {s.media_s:.1f} s of class analysed in "
        f"{s.wall_s:.1f} s ({s.realtime_factor:.1f}x real time), {s.frames} frames, {s.audio_chunks} audio chunks",
    )
    return 0


def _replay_gallery(args: argparse.Namespace) -> int:
    from services.replay.class_inputs import is_class_input
    from services.replay.files import media_name, replay_gallery

    if args.input is None or args.from_kafka:
        return _fail("--layout gallery analyses one gallery-view recording: classpulse replay FILE --layout gallery")
    if is_class_input(args.input):
        return _fail(f"{args.input} is a folder or manifest; --layout gallery takes one gallery-view recording "
                     "(leave --layout out for a folder of per-participant recordings)")
    if args.participant is not None or args.role is not None:
        return _fail("--participant/--role describe the one person of a single recording; in a gallery the ids are "
                     "the tiles p1..pN (--teacher pK names the teacher's tile)")
    if args.transcripts or args.chat is not None:
        return _fail("--transcripts and --chat are not supported with --layout gallery yet (the mixed audio is not "
                     "transcribed per tile); replay per-participant recordings for them")
    out = args.out or Path(f"{Path(media_name(args.input)).stem or 'replay'}-report")
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out} is a file; give a folder for the report")
    outcome = _guarded(args, out, lambda: replay_gallery(
        args.input, out_dir=out, session=args.session, teacher=args.teacher, show_progress=not args.no_progress,
        quiet_native=_mute_native(),
    ))
    if isinstance(outcome, int):
        return outcome
    s = outcome.stats
    g = outcome.report.gallery
    attributed = ""
    if g is not None and g.attribution is not None:
        a = g.attribution
        attributed = (f"; speech: {a.voiced_s:.1f} s voiced, {a.attributed_s:.1f} s attributed, "
                      f"{a.tied_s + a.no_mouth_s:.1f} s unattributed")
    _print_outcome(
        outcome.paths, outcome.report,
        f"{len(outcome.report.participants)} tiles{attributed}\n"
        f"{s.media_s:.1f} s of media analysed in {s.wall_s:.1f} s ({s.realtime_factor:.1f}x real time), "
        f"{s.frames} frames, {s.audio_chunks} audio chunks",
    )
    return 0


def _replay_kafka(args: argparse.Namespace) -> int:
    import asyncio

    from services.replay.from_events import (
        EventLogError,
        fetch_session_privacy,
        fetch_session_scores,
        private_report,
    )
    from services.replay.report_files import write_report
    from shared.contracts.topics import SCORES
    from shared.settings import CommonSettings

    if args.input is not None:
        return _fail("give either a recording or --from-kafka, not both")
    if not args.session:
        return _fail("--from-kafka needs --session ID (the live session to rebuild)")
    common = CommonSettings()
    if common.log_level != "DEBUG":  # aiokafka logs connection errors itself; the user gets our one line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bootstrap = args.bootstrap or common.kafka_bootstrap
    topic = args.topic or SCORES.name
    out = args.out or Path(f"{args.session}-report")
    try:
        events, skipped = asyncio.run(fetch_session_scores(bootstrap=bootstrap, session=args.session, topic=topic))
        changes = asyncio.run(fetch_session_privacy(bootstrap=bootstrap, session=args.session))
        report = private_report(events, changes, session=args.session, source=f"kafka://{bootstrap}/{topic}")
    except EventLogError as exc:
        return _fail(str(exc))
    if skipped:
        report.warnings.append(f"{skipped} stored record(s) of this session did not match the score contract; skipped")
    try:
        paths = write_report(report, out)
    except OSError as exc:
        return _fail(f"cannot write the report to {out} ({exc.strerror}); choose a writable folder with --out")
    _print_outcome(paths, report, f"{len(events)} score events, {len(report.participants)} participant(s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from services.replay.files import replay_file
    from shared.testkit.clips import write_sample
    from shared.testkit.script import agreement, default_script

    if not 10.0 <= args.seconds <= 600.0:
        return _fail("--seconds must be between 10 and 600")
    _setup()
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="classpulse-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    sample = out / "sample.mp4"
    print(f"making a {args.seconds:.0f} s sample class recording (Grace Hopper's photo + espeak-ng speech): {sample}")
    try:
        truth = write_sample(sample, script=default_script(args.seconds))
    except (RuntimeError, OSError) as exc:
        return _fail(f"cannot make the sample: {exc}")
    outcome = replay_file(
        sample, out_dir=out, session="demo", show_progress=not args.no_progress, quiet_native=_mute_native()
    )
    s = outcome.stats
    scores = agreement(truth, outcome.report.timeline)
    _print_outcome(
        outcome.paths, outcome.report,
        f"{s.media_s:.1f} s of media analysed in {s.wall_s:.1f} s ({s.realtime_factor:.1f}x real time)\n"
        "agreement with the sample's script (seconds next to a change excluded): "
        + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()),
    )
    print(f"open {outcome.paths.html} in a browser")
    return 0
