"""``classpulse aggregator``: class windows, participation figures and alerts from the score topic."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "aggregator",
        help="aggregate classpulse.scores into classpulse.aggregates/alerts (faust worker; needs Kafka and Redis)",
    )
    p.add_argument("--metrics-port", type=int, default=None,
                   help="port of /metrics (default: CLASSPULSE_AGGREGATOR_METRICS_PORT, 9103; 0: none)")
    p.add_argument("--engine", choices=["faust", "plain"], default=None,
                   help="faust worker with changelog recovery (default) or a plain aiokafka consumer")
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    p.set_defaults(handler=_aggregator)


def _aggregator(args: argparse.Namespace) -> int:
    from services.aggregator.service import serve_aggregator
    from services.aggregator.settings import AggregatorSettings
    from shared.service import MetricsServer, Runtime, run_service

    overrides = {k: v for k, v in (("metrics_port", args.metrics_port), ("engine", args.engine)) if v is not None}

    def runtime(settings: AggregatorSettings) -> Runtime:
        port = settings.metrics_port
        return Runtime(metrics=MetricsServer(port=port, host=settings.metrics_host) if port else None)

    return run_service(
        "aggregator",
        settings=lambda _: AggregatorSettings(**overrides),
        main=serve_aggregator,
        runtime=runtime,
        check_config=args.check_config,
    )
