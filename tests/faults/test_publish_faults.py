"""Publisher faults: every student reconnects (DELETE, then a new WHIP publish for the same
participant), and 20 concurrent publishes for one participant while the class goes on.

Same bar as the broker faults (``verdict.problems``); the double publish also needs the ingest to
hold at most one resource for that participant afterwards and a new student to be let in (201)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.testkit.fault_scenarios import STUDENTS, run_fault
from shared.testkit.fault_stack import Brokers

from .verdict import problems, verdict

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


async def test_reconnecting_publishers_continue_their_participants(
    fault_brokers: Brokers, fault_folder: Path, fault_media: Path
) -> None:
    report = await run_fault("reconnect", brokers=fault_brokers, folder=fault_folder, media=fault_media)
    assert report.scores > 0, f"no score at all; logs in {fault_folder / 'reconnect'}"
    assert not problems(report), verdict(report, fault_folder / "reconnect")


async def test_concurrent_publishes_for_one_participant_hold_one_resource(
    fault_brokers: Brokers, fault_folder: Path, fault_media: Path
) -> None:
    report = await run_fault("double_publish", brokers=fault_brokers, folder=fault_folder, media=fault_media)
    found = problems(report)
    resources = report.extra.get("ingest_resources", -1)
    if not 0 <= resources <= STUDENTS + 1:
        found.append(f"ingest holds {resources} resources for {STUDENTS} students + 1 double-published participant")
    if report.extra.get("late_status") != 201:
        found.append(f"a new student's publish got {report.extra.get('late_status')} instead of 201")
    assert not found, "; ".join(found) + "\n" + verdict(report, fault_folder / "double_publish")
