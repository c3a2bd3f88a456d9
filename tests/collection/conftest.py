"""Fixtures shared by the collection tests."""

from __future__ import annotations

import pytest
from _dataset_helpers import Clips


@pytest.fixture
def clips(tiny_studio) -> Clips:
    """Real eSpeak clips from the ``tiny_studio`` fixture, handed out one by one."""
    return Clips(tiny_studio)
