"""Quota changes pushed over a real WebSocket (RFC 9425 §4 with RFC 8620 §7.1 and RFC 8887): the Quota
state of the StateChange moves when usage or a limit changes, and is the state Quota/get then answers."""

from __future__ import annotations

ALICE = "alice@example.org"
MESSAGE = b"From: carol@remote.example\r\nSubject: hello\r\nMessage-ID: <q@remote>\r\n\r\nHi.\r\n"


def quota_state(client, account: str) -> str:
    name, result, _ = client.call([["Quota/get", {"accountId": account, "ids": []}, "q"]], "quota-state")[0]
    assert name == "Quota/get", result
    return result["state"]


def test_limits_and_usage_push_the_quota_state(server):
    account = server.services.accounts.get(ALICE).account_id
    client = server.client(ALICE)
    client.enable_push(["Quota"])
    server.services.mailboxes.set_quota(account, octets=1_000_000)  # made by the operator: `user quota`
    pushed = client.push(where=lambda m: "Quota" in m["changed"].get(account, {}))
    assert pushed["changed"][account] == {"Quota": quota_state(client, account)}
    server.services.mailboxes.deliver(ALICE, MESSAGE)
    current = quota_state(client, account)
    assert current != pushed["changed"][account]["Quota"]
    again = client.push(where=lambda m: m["changed"].get(account, {}).get("Quota") == current)
    assert again["changed"][account] == {"Quota": current}
    client.close()
