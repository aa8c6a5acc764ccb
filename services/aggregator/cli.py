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
    import importlib
    import sys

    from pydantic import ValidationError

    from services.aggregator.settings import AggregatorSettings
    from services.aggregator.topics_setup import TopicSetupError
    from services.core_commands import SETTINGS_MODULES
    from shared.settings import CommonSettings, SettingsError, check_environment

    for name in SETTINGS_MODULES:
        importlib.import_module(name)
    try:
        check_environment()
        common = CommonSettings()
        overrides = {k: v for k, v in (("metrics_port", args.metrics_port), ("engine", args.engine)) if v is not None}
        settings = AggregatorSettings(**overrides)
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(settings.model_dump_json(indent=2))
        return 0
    from services.aggregator.service import run_aggregator

    try:
        return run_aggregator(settings=settings, common=common)
    except TopicSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
