"""The cap on one user's open push connections (WebSockets and EventSource streams together, per process):
past it a 429 problem with Retry-After and a log line, never a 101; other users are not affected;
a connection that ends, however it ends, frees its slot."""

from __future__ import annotations

import json
import logging

import pytest

from jmapmono.config import ConfigError, load_config
from tests.support.eventsource_client import ALL, Stream
from tests.support.jmap import PASSWORD, basic_auth, cheap_password_hashing
from tests.support.servers import start_app
from tests.support.waiting import wait_until
from tests.support.ws_client import Rejected, WsClient, basic

ALICE, BOB = "alice@example.org", "bob@example.org"
LIMIT = 3


@pytest.fixture
def server(config, db, monkeypatch):
    cheap_password_hashing(monkeypatch)
    server = start_app(config, db, max_push_connections_per_user=LIMIT)
    for email in (ALICE, BOB):
        server.services.accounts.create_user(email, PASSWORD)
    yield server
    server.stop()


def open_for(server, email: str) -> int:
    """The server's count of ``email``'s open push connections."""
    return server.services.push_slots.open(server.services.accounts.get(email).id)


def refused_problem(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 429
    assert int(headers["retry-after"]) > 0
    assert body["status"] == 429 and f"the limit is {LIMIT}" in body["detail"]


def test_websockets_and_streams_share_one_cap_and_a_closed_one_frees_its_slot(server, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.push")
    sockets = [WsClient(server.port, basic(ALICE)) for _ in range(LIMIT - 1)]
    events = Stream(server.port, ALL, basic_auth(ALICE))
    assert events.status == 200
    assert open_for(server, ALICE) == LIMIT

    with pytest.raises(Rejected) as refused:
        WsClient(server.port, basic(ALICE))
    refused_problem(refused.value.status, refused.value.headers, refused.value.json())
    assert refused.value.headers["content-type"] == "application/problem+json"
    over = Stream(server.port, ALL, basic_auth(ALICE))
    refused_problem(over.status, over.headers, json.loads(over.body()))
    line = next(r.getMessage() for r in caplog.records if "event=push_connection_refused" in r.getMessage())
    assert f"user={ALICE}" in line and f"open={LIMIT}" in line and f"limit={LIMIT}" in line
    WsClient(server.port, basic(BOB)).barrier()  # another user is not affected
    assert open_for(server, ALICE) == LIMIT  # refusals took no slot

    sockets.pop().close()
    wait_until(lambda: open_for(server, ALICE) == LIMIT - 1, message="the closed socket's slot to be freed")
    sockets.append(WsClient(server.port, basic(ALICE)))
    sockets[-1].barrier()

    events.close()
    wait_until(lambda: open_for(server, ALICE) == LIMIT - 1, message="the ended stream's slot to be freed")
    again = Stream(server.port, ALL, basic_auth(ALICE))
    assert again.status == 200
    for client in sockets:
        client.close()
    again.close()
    wait_until(lambda: open_for(server, ALICE) == 0, message="every slot to be freed")


def test_the_cap_is_configured_and_checked():
    assert load_config({}).max_push_connections_per_user == 100
    assert load_config({"JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER": "7"}).max_push_connections_per_user == 7
    for value in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER"):
            load_config({"JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER": value})
