"""Mailbox sharing on open WebSockets (real sockets): a share granted while the sharee is connected puts the
owner's account on their socket at once, a delivery into the shared mailbox is pushed to them as to the owner,
and a revocation takes the account off the socket (the next request there is accountNotFound).

RFC 9670 (the sharee's Session gains the owner's account when data is shared with them); RFC 8620 §7.1:
"When something changes on the server, the server pushes a StateChange object to the client";
draft-ietf-jmap-mail-sharing: ``shareWith`` changes take effect for the principal at once.
"""

from __future__ import annotations

import time

from jmapmono.runtime import Runtime
from jmapmono.store import open_database
from tests.support.emails import mail
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE, BOB = "alice@example.org", "bob@example.org"
MAIL = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def _other_process(config, fn) -> None:
    """Run ``fn(runtime)`` in a Runtime of its own, as the ``jmapmono mailbox`` command would."""
    cli = Runtime(config, open_database(config.database_url))
    try:
        fn(cli)
    finally:
        cli.close()


def test_share_and_revoke_reach_the_sharees_open_socket_and_delivery_is_pushed(server, config):
    services = server.services
    alice = services.accounts.get(ALICE)
    bob = services.accounts.get(BOB)
    family = services.mailboxes.create_mailbox(alice.account_id, "Family").id
    bob_socket = WsClient(server.port, basic(BOB))
    bob_socket.enable_push(None)
    alice_socket = WsClient(server.port, basic(ALICE))
    alice_socket.enable_push(None)
    bus = services.jmap_bus

    _other_process(config, lambda cli: cli.mailboxes.share_mailbox(alice.account_id, family, bob.id, ["mayReadItems"]))
    wait_until(lambda: bus.listener_count(alice.account_id) == 2, message="bob's socket to listen on alice's account")
    bob_socket.push(where=lambda m: "ShareNotification" in m["changed"].get(bob.account_id, {}))
    name, result, _ = bob_socket.call([["Mailbox/get", {"accountId": alice.account_id}, "m"]], "shared", MAIL)[0]
    assert name == "Mailbox/get" and [mb["id"] for mb in result["list"]] == [family]
    # The owner was pushed the grant too (her Mailbox state moved).
    alice_socket.push(where=lambda m: "Mailbox" in m["changed"].get(alice.account_id, {}))

    for client in (bob_socket, alice_socket):
        client.pending.clear()
    started = time.monotonic()
    services.mailboxes.deliver(ALICE, mail(subject="For the family", msgid="fam@example.org"), "Family")
    pushed = {}
    for who, client in (("bob", bob_socket), ("alice", alice_socket)):
        client.push(where=lambda m: "Email" in m["changed"].get(alice.account_id, {}))
        pushed[who] = time.monotonic() - started
    print(f"push latency after delivery: sharee {pushed['bob'] * 1000:.1f} ms, owner {pushed['alice'] * 1000:.1f} ms")
    name, result, _ = bob_socket.call([["Email/query", {"accountId": alice.account_id}, "q"]], "mail", MAIL)[0]
    assert name == "Email/query" and len(result["ids"]) == 1

    bob_socket.pending.clear()
    _other_process(config, lambda cli: cli.mailboxes.share_mailbox(alice.account_id, family, bob.id, []))
    # The push says the account went: a ShareNotification in bob's own account.
    bob_socket.push(where=lambda m: "ShareNotification" in m["changed"].get(bob.account_id, {}))
    wait_until(lambda: bus.listener_count(alice.account_id) == 1, message="bob's listener on alice's account to go")
    name, error, _ = bob_socket.call([["Mailbox/get", {"accountId": alice.account_id}, "m"]], "revoked", MAIL)[0]
    assert (name, error["type"]) == ("error", "accountNotFound")
    bob_socket.barrier()  # the socket itself stays open for bob's own account
    bob_socket.close()
    alice_socket.close()
