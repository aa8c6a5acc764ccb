"""Broker faults under a live class: Redis paused 10 s, Kafka paused 15 s, Kafka restarted on its data.

Each run: the five services as processes, 3 students publishing, the fault, then every figure read
back from the topics from the start (``shared.testkit.fault_scenarios``); ``verdict.problems`` lists
the bar (no score lost or changed, no class window missing, no false away/camera_off, every service
healthy again within ``RECOVERY_BOUND_S``, clean exits).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.testkit.fault_scenarios import run_fault
from shared.testkit.fault_stack import Brokers

from .verdict import problems, verdict

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.mark.parametrize("fault", ["redis_pause", "kafka_pause", "kafka_restart"])
async def test_broker_fault_loses_nothing_and_recovers(
    fault: str, fault_brokers: Brokers, fault_folder: Path, fault_media: Path
) -> None:
    report = await run_fault(fault, brokers=fault_brokers, folder=fault_folder, media=fault_media)
    assert report.scores > 0, f"no score at all; logs in {fault_folder / fault}"
    assert not problems(report), verdict(report, fault_folder / fault)
