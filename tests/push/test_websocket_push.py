"""Push over the WebSocket, end to end on real sockets: the event flow runs, mail is delivered, and the
client sees StateChanges: isolation between users, several sockets, pushes interleaved with responses,
data types, disable, resume by pushState, every data type, delegation granted and revoked while connected."""

from __future__ import annotations

from tests.support.waiting import wait_until

ALICE, BOB = "alice@example.org", "bob@example.org"
MAIL = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
ALL_TYPES = {"Mailbox", "Email", "Thread", "EmailDelivery", "Identity", "EmailSubmission", "VacationResponse"}
_sent = [0]


def account(server, email: str) -> str:
    return server.services.accounts.get(email).account_id


def deliver(server, to: str, subject: str = "hello") -> None:
    _sent[0] += 1
    raw = f"From: carol@remote.example\r\nSubject: {subject}\r\nMessage-ID: <m{_sent[0]}@remote>\r\n\r\nHi.\r\n"
    server.services.mailboxes.deliver(to, raw.encode())


def state(client, acc: str, type_: str) -> str:
    name, result, _ = client.call([[f"{type_}/get", {"accountId": acc, "ids": []}, "s"]], f"state-{type_}")[0]
    assert name == f"{type_}/get", result
    return result["state"]


def pushes_for(client, acc: str) -> list[dict]:
    return [m for m in client.pending if m.get("@type") == "StateChange" and acc in m["changed"]]


def test_users_are_isolated(server):
    alice_acc, bob_acc = account(server, ALICE), account(server, BOB)
    alice, bob = server.client(ALICE), server.client(BOB)
    alice.enable_push(None)
    bob.enable_push(None)
    deliver(server, ALICE)
    assert set(alice.push()["changed"]) == {alice_acc}
    deliver(server, BOB)  # a barrier: bob's first push must be about his own account only
    assert set(bob.push()["changed"]) == {bob_acc}
    assert pushes_for(bob, alice_acc) == []
    name, error, _ = bob.call([["Email/get", {"accountId": alice_acc, "ids": None}, "e"]], using=MAIL)[0]
    assert name == "error" and error["type"] == "accountNotFound"
    alice.close()
    bob.close()


def test_every_socket_of_a_user_is_pushed(server):
    acc = account(server, ALICE)
    clients = [server.client(ALICE) for _ in range(3)]
    for client in clients:
        client.enable_push(["Email"])
    deliver(server, ALICE)
    current = state(clients[0], acc, "Email")
    for client in clients:
        assert client.push(where=lambda m: m["changed"][acc].get("Email") == current)["changed"] == {
            acc: {"Email": current}
        }
        client.close()


def test_pushes_and_responses_interleave_on_one_socket(server):
    acc = account(server, ALICE)
    client = server.client(ALICE)
    client.enable_push(None)
    create = [["Mailbox/set", {"accountId": acc, "create": {"n": {"name": "Projects"}}}, "m"]]
    client.send_request(create, "create", MAIL)
    response = client.response("create")
    new_state = response["methodResponses"][0][1]["newState"]
    assert client.push(where=lambda m: m["changed"][acc].get("Mailbox") == new_state)
    for i in range(5):
        client.send_request([["Core/echo", {"i": i}, "e"]], f"echo{i}", MAIL)
        deliver(server, ALICE, f"message {i}")
        assert client.response(f"echo{i}")["methodResponses"] == [["Core/echo", {"i": i}, "e"]]
    kinds = [m["@type"] for m in client.pending]
    final = state(client, acc, "Email")
    # Pushes coalesce: however many arrived, the newest state reaches the client.
    assert client.push(where=lambda m: m["changed"][acc].get("Email") == final)
    assert "StateChange" in kinds  # pushes arrived between the responses, on the same socket
    client.close()


def test_data_types_filter_and_a_later_enable_replaces_the_earlier(server):
    acc = account(server, ALICE)
    client = server.client(ALICE)
    client.enable_push(["Mailbox"])
    deliver(server, ALICE)
    assert set(client.push()["changed"][acc]) == {"Mailbox"}
    client.enable_push(["Email", "NotAType"])  # unknown names are ignored
    deliver(server, ALICE)
    assert set(client.push()["changed"][acc]) == {"Email"}
    client.enable_push(None)
    deliver(server, ALICE)
    assert set(client.push()["changed"][acc]) == {"Mailbox", "Email", "Thread", "EmailDelivery"}
    client.close()


def test_disable_stops_pushes_and_enable_resumes(server):
    acc = account(server, ALICE)
    quiet, witness = server.client(ALICE), server.client(ALICE)
    quiet.enable_push(None)
    witness.enable_push(None)
    quiet.send_json({"@type": "WebSocketPushDisable"})
    quiet.barrier()
    deliver(server, ALICE)
    witness.push()  # the event has reached this process's listeners
    quiet.barrier()  # a pending push would be written before this response
    assert pushes_for(quiet, acc) == []
    quiet.enable_push(["Email"])
    deliver(server, ALICE)
    assert set(quiet.push()["changed"][acc]) == {"Email"}
    quiet.close()
    witness.close()


def test_resume_by_push_state_after_missed_deliveries(server):
    acc = account(server, ALICE)
    client = server.client(ALICE)
    client.enable_push(None)
    deliver(server, ALICE)
    token = client.push()["pushState"]
    client.close()
    for i in range(2):  # delivered while the client was away
        deliver(server, ALICE, f"missed {i}")
    back = server.client(ALICE)
    back.enable_push(["Email", "Mailbox", "Identity"], push_state=token)
    first = back.pending[0]  # written before the barrier's response
    assert first["@type"] == "StateChange"
    assert first["changed"] == {acc: {"Email": state(back, acc, "Email"), "Mailbox": state(back, acc, "Mailbox")}}
    up_to_date = server.client(ALICE)
    up_to_date.enable_push(None, push_state=first["pushState"])
    assert pushes_for(up_to_date, acc) == []  # nothing changed since: nothing is sent
    stranger = server.client(ALICE)
    stranger.enable_push(["Mailbox"], push_state="not a push state")
    assert stranger.pending[0]["changed"] == {acc: {"Mailbox": state(stranger, acc, "Mailbox")}}
    for c in (back, up_to_date, stranger):
        c.close()


def test_every_data_type_is_pushed_and_email_delivery_only_on_delivery(server):
    acc, bob_acc = account(server, ALICE), account(server, BOB)
    alice, bob = server.client(ALICE), server.client(BOB)
    alice.enable_push(None)
    bob.enable_push(["EmailDelivery"])
    using = [*MAIL, "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse"]

    def pushed(type_: str) -> dict:
        # EmailDelivery has no /get: its state is the change log's.
        current = server.services.changes.state(acc, type_) if type_ == "EmailDelivery" else state(alice, acc, type_)
        return alice.push(where=lambda m: m["changed"].get(acc, {}).get(type_) == current)["changed"][acc]

    deliver(server, ALICE)
    delivered = pushed("EmailDelivery")
    assert {"Email", "Thread", "Mailbox", "EmailDelivery"} <= set(delivered)

    alice.call([["Mailbox/set", {"accountId": acc, "create": {"n": {"name": "Later"}}}, "m"]], "mb", using)
    assert "EmailDelivery" not in pushed("Mailbox")

    ids = alice.call([["Email/query", {"accountId": acc}, "q"]], "q", using)[0][1]["ids"]
    update = {"update": {ids[0]: {"keywords/$flagged": True}}}
    alice.call([["Email/set", {"accountId": acc, **update}, "f"]], "flag", using)
    assert "EmailDelivery" not in pushed("Email")

    alice.call([["VacationResponse/set", {"accountId": acc, "update": {"singleton": {"isEnabled": True}}}, "v"]])
    assert "EmailDelivery" not in pushed("VacationResponse")
    alice.call([["VacationResponse/set", {"accountId": acc, "update": {"singleton": {"isEnabled": False}}}, "v"]])

    created = alice.call(
        [["Identity/set", {"accountId": acc, "create": {"i": {"name": "Work", "email": ALICE}}}, "i"]], "id", using
    )[0][1]
    identity_id = created["created"]["i"]["id"]
    assert "EmailDelivery" not in pushed("Identity")

    draft = {
        "mailboxIds": {_drafts(alice, acc, using): True},
        "keywords": {"$draft": True},
        "from": [{"email": ALICE}],
        "to": [{"email": BOB}],
        "subject": "to bob",
        "bodyValues": {"b": {"value": "Hello Bob."}},
        "textBody": [{"partId": "b", "type": "text/plain"}],
    }
    calls = [
        ["Email/set", {"accountId": acc, "create": {"d": draft}}, "c"],
        ["EmailSubmission/set", {"accountId": acc, "create": {"s": {"identityId": identity_id, "emailId": "#d"}}}, "s"],
    ]
    responses = alice.call(calls, "send", using)
    assert responses[1][1]["created"]["s"]["id"], responses
    assert "EmailDelivery" not in pushed("EmailSubmission")  # sending is not a delivery to alice
    assert "EmailDelivery" in bob.push()["changed"][bob_acc]  # but it is one to bob
    alice.close()
    bob.close()


def _drafts(client, acc: str, using: list[str]) -> str:
    mailboxes = client.call([["Mailbox/get", {"accountId": acc, "ids": None}, "m"]], "boxes", using)[0][1]["list"]
    return next(m["id"] for m in mailboxes if m["role"] == "drafts")


def test_delegation_granted_and_revoked_while_connected(server):
    alice_acc, bob_acc = account(server, ALICE), account(server, BOB)
    bus = server.services.jmap_bus
    bob = server.client(BOB)
    bob.enable_push(None)
    server.services.accounts.delegate(ALICE, BOB)
    gained = bob.push(where=lambda m: alice_acc in m["changed"])  # the new account's states: the Session changed
    assert "Mailbox" in gained["changed"][alice_acc]
    deliver(server, ALICE)
    current = state(bob, alice_acc, "Email")
    assert bob.push(where=lambda m: m["changed"].get(alice_acc, {}).get("Email") == current)
    name, result, _ = bob.call([["Mailbox/get", {"accountId": alice_acc, "ids": None}, "m"]], "boxes", MAIL)[0]
    assert name == "Mailbox/get" and result["list"]

    server.services.accounts.undelegate(ALICE, BOB)
    wait_until(lambda: bus.listener_count(alice_acc) == 0, message="bob's listener on alice's account to go")
    bob.pending.clear()
    deliver(server, ALICE)
    deliver(server, BOB)  # barrier: bob hears his own delivery
    bob.push(where=lambda m: bob_acc in m["changed"])
    assert pushes_for(bob, alice_acc) == []
    name, error, _ = bob.call([["Mailbox/get", {"accountId": alice_acc, "ids": None}, "m"]], "gone", MAIL)[0]
    assert name == "error" and error["type"] == "accountNotFound"
    assert bus.listener_count(bob_acc) == 1
    bob.close()
    wait_until(lambda: bus.listener_count(bob_acc) == 0, message="bob's listeners to go")
