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
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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


def main(argv: Sequence[str] | None = None, *, exit_now: bool = False) -> int:
    """Run one command; its exit status. ``exit_now`` (the ``classpulse`` program itself, never an
    in-process caller): a command that declares ``exit_now`` (set_defaults) leaves the process as soon
    as it returned, without the interpreter's teardown of the native libraries it loaded."""
    parser = build_parser()
    args = parser.parse_args(argv)
    register_all_settings()
    handler = args.handler
    try:
        result = handler(args)
    except KeyboardInterrupt:
        return 130
    code = int(result or 0)
    if exit_now and getattr(args, "exit_now", False):
        leave_now(code)
    return code


def leave_now(code: int) -> NoReturn:
    """Flush logging and stdio, then end the process with ``code`` skipping the interpreter's finalisation.

    For commands whose work is done and written (``classpulse replay``: its report files are written
    atomically before it returns): tearing down mediapipe, CTranslate2, onnxruntime and matplotlib
    costs ~0.5 s of a 3 s replay on this box, spent after the last useful thing happened."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The ``classpulse`` program (console script and ``python -m services.cli``)."""
    sys.exit(main(exit_now=True))


if __name__ == "__main__":
    entry()
