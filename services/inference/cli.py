"""``classpulse inference`` (standalone worker), ``classpulse train`` and ``classpulse evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMELINE_HELP = (
    "labelled timeline: JSON Lines, one analysis step per line with session, participant, media_time, "
    "camera_on, mic_on, features (FeatureSnapshot fields) and labels {attentive, speaking, hand_raised, "
    "engagement}; ScoreEvent lines (the classpulse.scores log) plus a labels object qualify"
)


def register(sub: Any) -> None:
    p = sub.add_parser("inference", help="run an inference worker: media stream -> behaviour scores (Kafka + live)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    p.set_defaults(handler=_inference)

    p = sub.add_parser("train", help="fit the fusion model to a labelled timeline and save its weights")
    p.add_argument("timeline", type=Path, help=TIMELINE_HELP)
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.pt)")
    p.add_argument("--epochs", type=int, default=300, help="full-batch Adam epochs (default 300)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights instead of the priors")
    p.set_defaults(handler=_train)

    p = sub.add_parser("evaluate", help="score a labelled timeline with the fusion model (priors or --weights)")
    p.add_argument("timeline", type=Path, help=TIMELINE_HELP)
    p.add_argument("--weights", type=Path, default=None, help="weights from `classpulse train` (default: priors)")
    p.set_defaults(handler=_evaluate)


def _inference(args: argparse.Namespace) -> int:
    from services.inference.service import serve_inference
    from services.inference.settings import InferenceSettings
    from shared.service import MetricsServer, Runtime, run_service

    def runtime(settings: InferenceSettings) -> Runtime:
        metrics = None if args.metrics_port is None else MetricsServer(port=args.metrics_port, host=args.metrics_host)
        return Runtime(torch_threads=settings.torch_threads, metrics=metrics)

    return run_service(
        "inference", settings=lambda _: InferenceSettings(), main=serve_inference, runtime=runtime,
        check_config=args.check_config,
    )


def _model(window: int, weights: Path | None) -> Any:
    from services.inference.fusion import FusionModel
    from services.inference.training import load_weights

    model = FusionModel(window=window)
    if weights is not None:
        if not weights.is_file():
            raise ValueError(f"{weights}: no such weights file")
        load_weights(model, weights)
    return model


def _train(args: argparse.Namespace) -> int:
    from services.inference.settings import InferenceSettings
    from services.inference.training import TimelineError, build_dataset, evaluate, read_timeline, save_weights, train
    from shared.torch_threads import set_torch_threads

    if args.epochs < 1 or args.lr <= 0:
        print("error: --epochs must be >= 1 and --lr > 0", file=sys.stderr)
        return 2
    settings = InferenceSettings()
    set_torch_threads(settings.torch_threads)
    window = settings.window_steps
    try:
        rows = read_timeline(args.timeline)
        model = _model(window, args.init)
    except (TimelineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = build_dataset(rows, window=window)
    history = train(model, data, epochs=args.epochs, lr=args.lr)
    provenance = f"trained by `classpulse train` on {args.timeline.name} ({len(rows)} rows, {args.epochs} epochs)"
    save_weights(model, args.out, provenance=provenance)
    report = {"loss_before": round(history[0], 5), "loss_after": round(history[-1], 5), **evaluate(model, data)}
    print(json.dumps({"weights": str(args.out), **report}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from services.inference.settings import InferenceSettings
    from services.inference.training import TimelineError, build_dataset, evaluate, read_timeline
    from shared.torch_threads import set_torch_threads

    settings = InferenceSettings()
    set_torch_threads(settings.torch_threads)
    window = settings.window_steps
    try:
        rows = read_timeline(args.timeline)
        model = _model(window, args.weights)
    except (TimelineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate(model, build_dataset(rows, window=window))
    print(json.dumps({"weights": str(args.weights) if args.weights else "priors", **report}, indent=2))
    return 0
