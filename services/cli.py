"""The one ClassPulse command line: ``classpulse <command>``.

Each command lives next to the service it runs, in a module with
``register(subparsers)``; registering imports nothing heavy (handlers import lazily),
so ``classpulse token`` starts fast. This module is a composition root: before any command
runs it imports every service's settings module, so the shared settings registry is complete
and every service (booted by ``shared.service.run_service``) rejects unknown ``CLASSPULSE_*``
variables against all services' settings: one env file works for all of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add commands. Each defines register(subparsers) -> None.
COMMAND_MODULES: tuple[str, ...] = (
    "services.core_commands",
    "services.gateway.cli",
    "services.inference.cli",
    "services.inference.transcribe.cli",
    "services.ingest.cli",
    "services.up.cli",
    "services.replay.cli",
    "services.replay.export_cli",
    "services.aggregator.cli",
)


# Settings modules of every service; importing one registers its class (shared.settings.register_settings).
SETTINGS_MODULES: tuple[str, ...] = (
    "shared.settings",
    "shared.text.settings",
    "services.gateway.settings",
    "services.gateway.lti.settings",
    "services.inference.settings",
    "services.inference.transcribe.settings",
    "services.ingest.settings",
    "services.replay.settings",
    "services.aggregator.settings",
    "services.up.settings",
)


def register_all_settings() -> None:
    """Import every service's settings module (pydantic only, fast) so all settings classes register."""
    for name in SETTINGS_MODULES:
        importlib.import_module(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classpulse",
        description="Streaming behaviour analytics for live online classes (presence, attention, speaking, hands).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    register_all_settings()
    handler = args.handler
    try:
        result = handler(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
