"""SieveScript changes pushed over a real WebSocket (RFC 9661 with RFC 8620 §7.1 and RFC 8887): a script
created and activated with SieveScript/set on the socket moves the SieveScript state of the StateChange,
and SieveScript/changes from the old state returns exactly what changed."""

from __future__ import annotations

ALICE = "alice@example.org"
SCRIPT = b'require "fileinto";\r\nif header :contains "subject" "jmap" { fileinto "Lists"; }\r\n'


def one(client, method: str, args: dict) -> dict:
    name, result, _ = client.call([[method, args, "c"]], method)[0]
    assert name == method, result
    return result


def test_set_pushes_the_sieve_script_state(server):
    user = server.services.accounts.get(ALICE)
    account = user.account_id
    blob = server.services.blobs.upload(account, user.id, SCRIPT, "application/sieve").blob_id
    client = server.client(ALICE)
    client.enable_push(["SieveScript"])
    start = one(client, "SieveScript/get", {"accountId": account, "ids": []})["state"]
    created = one(
        client,
        "SieveScript/set",
        {"accountId": account, "create": {"s": {"name": "main", "blobId": blob}}, "onSuccessActivateScript": "#s"},
    )
    script_id = created["created"]["s"]["id"]
    pushed = client.push(where=lambda m: m["changed"].get(account, {}).get("SieveScript") == created["newState"])
    assert pushed["changed"][account] == {"SieveScript": created["newState"]}
    changes = one(client, "SieveScript/changes", {"accountId": account, "sinceState": start})
    assert changes["created"] == [script_id] and changes["newState"] == created["newState"]
    off = one(client, "SieveScript/set", {"accountId": account, "onSuccessDeactivateScript": True})
    assert off["updated"] == {script_id: {"isActive": False}}
    client.push(where=lambda m: m["changed"].get(account, {}).get("SieveScript") == off["newState"])
    again = one(client, "SieveScript/changes", {"accountId": account, "sinceState": created["newState"]})
    assert (again["created"], again["updated"], again["destroyed"]) == ([], [script_id], [])
    client.close()
