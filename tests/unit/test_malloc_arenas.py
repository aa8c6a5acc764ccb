"""Limiting glibc's malloc arenas from inside the process."""

from __future__ import annotations

import platform

import pytest

from shared.malloc_arenas import limit_malloc_arenas

pytestmark = pytest.mark.unit


def test_zero_leaves_the_allocator_alone() -> None:
    assert limit_malloc_arenas(0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_glibc_takes_the_limit() -> None:
    assert limit_malloc_arenas(8) is True  # 8 per core is at least glibc's own default on this box
