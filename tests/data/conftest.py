"""Fixtures for the data tests. No test here may reach the real network: every download goes to a
local server the test starts, and by default DIGITNET_MIRRORS points at a port where nothing listens."""

from __future__ import annotations

import pytest

from tests.data.localserver import refused_url


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch):
    monkeypatch.setenv("DIGITNET_MIRRORS", refused_url())
