"""Fixtures of the fault tier: a private Redis + Kafka for the whole run (the tests pause and restart
them, so they never touch the brokers other tiers use) and the pre-encoded clip the students relay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testkit.fault_scenarios import make_media
from shared.testkit.fault_stack import Brokers


@pytest.fixture(scope="session")
def fault_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def fault_brokers(fault_folder: Path) -> Iterator[Brokers]:
    brokers = Brokers(run_dir=fault_folder / "brokers")
    try:
        brokers.start()
    except RuntimeError as exc:
        pytest.fail(f"the fault tier's private Redis + Kafka did not start: {exc}", pytrace=False)
    try:
        yield brokers
    finally:
        brokers.stop()


@pytest.fixture(scope="session")
def fault_media(fault_folder: Path) -> Path:
    return make_media(fault_folder)
