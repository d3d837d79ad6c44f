"""``jmapmono user passwd|revoke|delete|undelegate`` as real processes, against a server holding open
WebSockets: the process that revokes serves nothing, and the serving one still ends what the revoked
credential opened (close 1008), or takes the owner's account off the delegate's socket."""

from __future__ import annotations

import pytest

from jmapmono.accounts.app_passwords import AppPasswords
from tests.cli.test_users import cli_env, together
from tests.support.jmap import PASSWORD, cheap_password_hashing
from tests.support.servers import start_app
from tests.support.ws_client import WsClient, basic

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"
MAIL = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


@pytest.fixture
def server(config, db, monkeypatch):
    cheap_password_hashing(monkeypatch)
    server = start_app(config, db)
    for email in (ALICE, BOB, CAROL):
        server.services.accounts.create_user(email, PASSWORD)
    yield server
    server.stop()


def mailboxes(client: WsClient, account_id: str) -> str:
    """``Mailbox/get``, or the type of the error the call got."""
    name, result, _ = client.call([["Mailbox/get", {"accountId": account_id, "ids": None}, "m"]], account_id, MAIL)[0]
    return result["type"] if name == "error" else name


def test_revocations_from_the_command_line_end_sessions_on_the_server(server, config, tmp_path):
    accounts = server.services.accounts
    alice_account = accounts.get(ALICE).account_id
    accounts.delegate(ALICE, CAROL)
    created, token = AppPasswords(server.services.db, accounts).create(accounts.require(BOB), "phone")
    alice = WsClient(server.port, basic(ALICE))
    bob = WsClient(server.port, f"Bearer {token}")
    carol = WsClient(server.port, basic(CAROL))
    carol.enable_push(None)
    alice.barrier()
    bob.barrier()
    assert mailboxes(carol, alice_account) == "Mailbox/get"

    results = together(
        cli_env(config.database_url, tmp_path),
        ("passwd", ALICE, "--password", "a new password"),
        ("revoke", BOB, created.id),
        ("undelegate", ALICE, CAROL),
    )
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]

    assert alice.wait_closed() == 1008
    assert bob.wait_closed() == 1008
    assert mailboxes(carol, alice_account) == "accountNotFound"  # every command has exited: all committed
    assert mailboxes(carol, accounts.get(CAROL).account_id) == "Mailbox/get"

    [deleted] = together(cli_env(config.database_url, tmp_path), ("delete", CAROL))
    assert deleted.returncode == 0, deleted.stderr
    assert carol.wait_closed() == 1008
