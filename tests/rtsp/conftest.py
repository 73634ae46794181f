"""Fixtures of the RTSP unit tests (helpers are in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from tests.rtsp.support import Harness


@pytest.fixture
def h(clock: Clock) -> Iterator[Harness]:
    harness = Harness(clock)
    yield harness
    harness.close_all()


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)
