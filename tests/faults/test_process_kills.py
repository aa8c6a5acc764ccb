"""Process deaths under a live class: SIGKILL of an inference worker (the one scoring student-1), of
the aggregator and of the gateway, each restarted a second later as an orchestrator would (same
command, env, ports and aggregator data dir). Same bar as the broker faults (``verdict.problems``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.testkit.fault_scenarios import run_fault
from shared.testkit.fault_stack import Brokers

from .verdict import problems, verdict

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.mark.parametrize("fault", ["kill_inference", "kill_aggregator", "kill_gateway"])
async def test_killed_service_restarts_without_loss(
    fault: str, fault_brokers: Brokers, fault_folder: Path, fault_media: Path
) -> None:
    report = await run_fault(fault, brokers=fault_brokers, folder=fault_folder, media=fault_media)
    assert report.scores > 0, f"no score at all; logs in {fault_folder / fault}"
    assert not problems(report), verdict(report, fault_folder / fault)
