"""``classpulse`` leaves without the interpreter's teardown only for commands that ask (``exit_now``), after
flushing what they printed and logged; in-process callers of ``main`` always get the status back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.cli import build_parser, main

pytestmark = pytest.mark.unit


def test_leave_now_flushes_block_buffered_output_and_logs_then_exits_with_the_code() -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
        "from services.cli import leave_now\n"
        "print('report: written')\n"  # stdout to a pipe is block-buffered: lost without a flush
        "logging.getLogger('x').warning('a warning line')\n"
        "import atexit; atexit.register(lambda: print('teardown ran'))\n"
        "leave_now(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "report: written\n"  # and no teardown
    assert "a warning line" in done.stderr


def test_only_replay_asks_and_in_process_callers_get_the_status() -> None:
    parser = build_parser()
    assert parser.parse_args(["replay", "x.mp4"]).exit_now is True
    assert getattr(parser.parse_args(["token", "--session", "s", "--role", "viewer"]), "exit_now", False) is False
    # main() without exit_now (tests, embedding callers) returns instead of leaving
    assert main(["replay", "/nonexistent/clip.mp4", "--no-progress"]) != 0
