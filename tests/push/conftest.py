"""Fixtures of the push tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.jmap import PASSWORD
from tests.support.push_receiver import PushReceiver
from tests.support.servers import AppServer, start_app

#: The users of the ``server`` fixture.
ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    """A web push service on loopback that records what it is sent."""
    r = PushReceiver()
    yield r
    r.stop()


@pytest.fixture
def server(config, db) -> Iterator[AppServer]:
    """The app on a real socket with two users, ``ALICE`` and ``BOB`` (a module may override it)."""
    server = start_app(config, db)
    for email in (ALICE, BOB):
        server.services.accounts.create_user(email, PASSWORD)
    yield server
    server.stop()
