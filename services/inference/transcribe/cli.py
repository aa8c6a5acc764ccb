"""``classpulse transcribe``: a transcribe worker (distributed mode): speech segments -> Whisper -> speech events."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "transcribe",
        help="run a transcribe worker: speech segments (Redis) -> Whisper -> speech events (Kafka)",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics (+ /healthz) on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    p.set_defaults(handler=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    from services.inference.transcribe.service import check_placement, serve_transcribe
    from services.inference.transcribe.settings import TranscribeSettings
    from shared.service import MetricsServer, Runtime, run_service
    from shared.settings import CommonSettings

    def settings(common: CommonSettings) -> TranscribeSettings:
        loaded = TranscribeSettings()
        check_placement(loaded, common.transport)
        return loaded

    def runtime(_: TranscribeSettings) -> Runtime:
        metrics = None if args.metrics_port is None else MetricsServer(port=args.metrics_port, host=args.metrics_host)
        return Runtime(metrics=metrics)

    return run_service(
        "transcribe", settings=settings, main=serve_transcribe, runtime=runtime, check_config=args.check_config
    )
