"""Shared fixtures and guards.

pytest-twisted runs one real reactor for the whole session and has no
dirty-reactor check, so unit tests use ``task.Clock`` and the ``clock``
fixture fails a test that leaves delayed calls behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock()
    yield c
    pending = [d for d in c.getDelayedCalls() if d.active()]
    assert not pending, f"test left delayed calls behind: {pending}"
