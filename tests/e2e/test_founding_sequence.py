"""The founding sequence, end to end, as a mail client lives it:

1. the user authenticates on the WebSocket of a real ``serve`` process;
2. syncs once, then enables push for Email and Mailbox;
3. a message arrives over LMTP, handled by ANOTHER process (serve's LMTP child);
4. the client receives the StateChange;
5. it resyncs over the same socket with Email/changes + Email/get + Mailbox/changes + Mailbox/get;
6. and ends with exactly the server's state.
"""

from __future__ import annotations

import requests

from tests.support.jmap import PASSWORD
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import start_serve
from tests.support.ws_client import WsClient, basic

ALICE = "alice@example.org"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
EMAIL_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "subject", "from", "receivedAt", "size"]
MESSAGE = (
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.org\r\nSubject: The founding sequence\r\n"
    b"Message-ID: <founding@remote.example>\r\nDate: Mon, 1 Jul 2024 10:00:00 +0000\r\n\r\nIt works.\r\n"
)


def ref(call_id: str, name: str, path: str) -> dict:
    return {"resultOf": call_id, "name": name, "path": path}


class Replica:
    """What a client keeps: every mailbox and email, and the states they are at."""

    def __init__(self, client: WsClient, account: str) -> None:
        self.client = client
        self.account = account
        self.mailboxes, self.emails, self.mailbox_state, self.email_state = self.fetch_all()

    def fetch_all(self) -> tuple[dict, dict, str, str]:
        acc = self.account
        responses = self.client.call(
            [
                ["Mailbox/get", {"accountId": acc, "ids": None}, "m"],
                ["Email/query", {"accountId": acc}, "q"],
                [
                    "Email/get",
                    {"accountId": acc, "#ids": ref("q", "Email/query", "/ids"), "properties": EMAIL_PROPERTIES},
                    "e",
                ],
            ],
            "full",
            USING,
        )
        boxes, emails = responses[0][1], responses[2][1]
        assert responses[1][1]["ids"] == [e["id"] for e in emails["list"]]
        return (
            {m["id"]: m for m in boxes["list"]},
            {e["id"]: e for e in emails["list"]},
            boxes["state"],
            emails["state"],
        )

    def resync(self) -> list:
        """The incremental sync a push triggers: changes since our states, then the objects that moved."""
        acc = self.account
        email_get = {"accountId": acc, "properties": EMAIL_PROPERTIES}
        responses = self.client.call(
            [
                ["Email/changes", {"accountId": acc, "sinceState": self.email_state}, "ec"],
                ["Email/get", {**email_get, "#ids": ref("ec", "Email/changes", "/created")}, "ecr"],
                ["Email/get", {**email_get, "#ids": ref("ec", "Email/changes", "/updated")}, "eup"],
                ["Mailbox/changes", {"accountId": acc, "sinceState": self.mailbox_state}, "mc"],
                ["Mailbox/get", {"accountId": acc, "#ids": ref("mc", "Mailbox/changes", "/created")}, "mcr"],
                ["Mailbox/get", {"accountId": acc, "#ids": ref("mc", "Mailbox/changes", "/updated")}, "mup"],
            ],
            "resync",
            USING,
        )
        assert all(name != "error" for name, _, _ in responses), responses
        email_changes, created, updated, mailbox_changes, new_boxes, changed_boxes = (r[1] for r in responses)
        assert not email_changes["hasMoreChanges"] and not mailbox_changes["hasMoreChanges"]
        for email in created["list"] + updated["list"]:
            self.emails[email["id"]] = email
        for gone in email_changes["destroyed"]:
            self.emails.pop(gone, None)
        for box in new_boxes["list"] + changed_boxes["list"]:
            self.mailboxes[box["id"]] = box
        for gone in mailbox_changes["destroyed"]:
            self.mailboxes.pop(gone, None)
        self.email_state, self.mailbox_state = email_changes["newState"], mailbox_changes["newState"]
        return responses


def test_founding_sequence(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_serve(config.database_url, tmp_path)
    try:
        session = requests.get(f"{server.url}/.well-known/jmap", headers={"Authorization": basic(ALICE)}).json()
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        ws_url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
        assert ws_url == f"ws://127.0.0.1:{server.http_port}/jmap/ws"

        # 1. Authenticate on the WebSocket (once, at the upgrade).
        client = WsClient(server.http_port, basic(ALICE))
        assert client.subprotocol == "jmap"
        replica = Replica(client, account)
        assert replica.emails == {}

        # 2. Push for Email and Mailbox.
        client.enable_push(["Email", "Mailbox"])

        # 3. Another process (the LMTP child of serve) delivers a message.
        with LMTPClient("127.0.0.1", server.lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            _, data = lmtp.transaction("carol@remote.example", [ALICE], MESSAGE)
            assert [r.code for r in data] == [250]

        # 4. The StateChange arrives on the socket.
        change = client.push(where=lambda m: account in m["changed"])  # (how fast: bench/push_latency.py)
        pushed = change["changed"][account]
        assert set(pushed) == {"Email", "Mailbox"}
        assert isinstance(change["pushState"], str)

        # 5. Resync over the same socket.
        responses = replica.resync()
        created = responses[1][1]["list"]
        assert [e["subject"] for e in created] == ["The founding sequence"]
        assert created[0]["from"] == [{"name": "Carol", "email": "carol@remote.example"}]
        inbox = next(m for m in replica.mailboxes.values() if m["role"] == "inbox")
        assert created[0]["mailboxIds"] == {inbox["id"]: True}
        assert inbox["totalEmails"] == 1 and inbox["unreadEmails"] == 1
        assert replica.email_state == pushed["Email"] and replica.mailbox_state == pushed["Mailbox"]

        # 6. Exactly the server's state.
        mailboxes, emails, mailbox_state, email_state = replica.fetch_all()
        assert replica.mailboxes == mailboxes and replica.emails == emails
        assert (replica.mailbox_state, replica.email_state) == (mailbox_state, email_state)
        client.close()
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr()
