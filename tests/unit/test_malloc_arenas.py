"""Limiting glibc's malloc arenas from inside the process."""

from __future__ import annotations

import platform

import pytest

from shared.malloc_arenas import limit_malloc_arenas

pytestmark = pytest.mark.unit


def test_zero_leaves_the_allocator_alone() -> None:
    assert limit_malloc_arenas(0) is False


def test_glibc_takes_the_limit_and_other_allocators_are_left_alone() -> None:
    on_glibc = platform.libc_ver()[0] == "glibc"  # Debian (CI, the images): glibc must take it
    assert limit_malloc_arenas(8) is on_glibc  # 8 per core is at least glibc's own default on this box
