"""Test tiers and real-service fixtures.

Every test module declares its tier: ``pytestmark = pytest.mark.unit`` (or
``integration`` / ``gpu`` / ``faults``); collection fails for a module without one. The fault tier
(``tests/faults``) starts its own private Redis + Kafka, since it pauses and restarts them. Integration tests
get real Redis and Kafka from ``CLASSPULSE_TEST_REDIS_URL`` / ``CLASSPULSE_TEST_KAFKA_BOOTSTRAP``
(``./dev test`` starts both); a missing service **fails** the test, it never skips. Only
GPU tests skip, when CUDA is absent.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

TIERS = ("unit", "integration", "gpu", "faults")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    undeclared: set[str] = set()
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            undeclared.add(str(item.path))
    if undeclared:
        raise pytest.UsageError(
            "test modules without a tier marker (set pytestmark = pytest.mark.unit|integration|gpu|faults): "
            + ", ".join(sorted(undeclared))
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")


def _need(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{what} is not configured: set {var} (./dev test starts it and sets it)", pytrace=False)
    return value


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _need("CLASSPULSE_TEST_REDIS_URL", "Redis")
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    if not _reachable(host, int(port)):
        pytest.fail(f"Redis at {url} is not reachable; start it with ./dev services start", pytrace=False)
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = _need("CLASSPULSE_TEST_KAFKA_BOOTSTRAP", "Kafka")
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    if not _reachable(host, int(port)):
        pytest.fail(f"Kafka at {bootstrap} is not reachable; start it with ./dev services start", pytrace=False)
    return bootstrap


@pytest.fixture
def unique() -> Iterator[str]:
    """A unique suffix for topic, stream and group names so tests never share state."""
    yield uuid.uuid4().hex[:10]
