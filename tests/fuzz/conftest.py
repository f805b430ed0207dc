"""Fixtures of the fuzz tests (see support.py for what they check)."""

from __future__ import annotations

import pytest

from tests.fuzz.support import MemoryWatch


@pytest.fixture
def memory() -> MemoryWatch:
    """Runs a parser under tracemalloc and checks its peak allocation against the input size."""
    return MemoryWatch()
