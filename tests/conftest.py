"""Fixtures shared by every test: real PostgreSQL (pytest-django) and the real Redis layer."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tunables(settings):
    """Tests start from DESIGN.md's defaults whatever the environment says."""
    settings.AUTO_ACCEPT = False
    settings.AGENT_CAPACITY = 2
    return settings
