"""Fixtures of the push tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.push_receiver import PushReceiver


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    """A web push service on loopback that records what it is sent."""
    r = PushReceiver()
    yield r
    r.stop()
