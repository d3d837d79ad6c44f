"""EmailSubmission (RFC 8621 §7): sending through a REAL SMTP server (aiosmtpd, its own process) and to
local users, the derived envelope, Bcc stripped, per-recipient delivery status, every SetError, the
implicit Email/set of onSuccessUpdateEmail/onSuccessDestroyEmail, /get, /changes, /query."""

import pytest

from jmapmono.sending.submissions import MAX_RECIPIENTS, strip_bcc
from tests.support.clock import one_millisecond
from tests.support.emails import upload
from tests.support.jmap import JmapClient
from tests.support.smtp_sink import SmtpSink

HEADERS = (
    "From: Alice <alice@example.org>\r\n"
    "To: Carol <carol@remote.example>, dave@remote.example\r\n"
    "Cc: CAROL@remote.example\r\n"
    "Bcc: eve@remote.example,\r\n"
    "  frank@remote.example\r\n"
    "Subject: Plans\r\n"
)


@pytest.fixture
def config(config, sink):
    """The deployment's configuration with the sink as its SMTP relay."""
    sink.clear()
    return config.with_overrides(smtp_relay=sink.address)


def roles(services, account_id):
    return {mb.role: mb.id for mb in services.mailboxes.get_mailboxes(account_id)[0]}


_counter = [0]


def draft(services, account_id, headers=HEADERS, body="Let us meet.\r\n", keywords=("$draft", "$seen")):
    """Store a draft in the account's Drafts; its email id."""
    _counter[0] += 1
    raw = f"{headers}Message-ID: <draft{_counter[0]}@example.org>\r\nDate: Mon, 1 Jul 2024 10:00:00 +0000\r\n\r\n"
    raw = (raw + body).encode()
    return services.mailboxes.append(account_id, raw, [roles(services, account_id)["drafts"]], keywords).id


def identity(client):
    return client.call("Identity/get", ids=None)["list"][0]["id"]


def submit(client, email_id, identity_id=None, **extra):
    obj = {"identityId": identity_id or identity(client), "emailId": email_id, **extra}
    return client.call("EmailSubmission/set", create={"k": obj})


def refused(client, email_id, **extra):
    out = submit(client, email_id, **extra)
    assert out["created"] is None, out
    return out["notCreated"]["k"]


def raw_of(services, account_id, email_id):
    messages, _ = services.mailboxes.get_messages(account_id, [email_id])
    return services.blobs.get(account_id, messages[email_id].blob_id)


# --- sending ------------------------------------------------------------------------------------------------------


def test_envelope_is_derived_and_bcc_stripped(alice, services, sink):
    email_id = draft(services, alice.account_id)
    before = alice.call("EmailSubmission/get", ids=[])["state"]
    out = submit(alice, email_id)
    created = out["created"]["k"]
    assert set(created) >= {"id", "threadId", "sendAt", "undoStatus", "deliveryStatus", "envelope"}
    assert created["undoStatus"] == "final" and created["sendAt"].endswith("Z")
    rcpts = ["carol@remote.example", "dave@remote.example", "eve@remote.example", "frank@remote.example"]
    assert created["envelope"] == {
        "mailFrom": {"email": "alice@example.org", "parameters": None},
        "rcptTo": [{"email": r, "parameters": None} for r in rcpts],
    }
    [sent] = sink.wait(1)
    assert sent["mail_from"] == "alice@example.org" and sent["rcpt_tos"] == rcpts
    assert b"Bcc" not in sent["data"] and b"frank" not in sent["data"]
    assert sent["data"] == strip_bcc(raw_of(services, alice.account_id, email_id))
    assert sent["data"].startswith(b"From: Alice <alice@example.org>\r\nTo: Carol")
    # What /get and /changes say agrees with the response.
    [got] = alice.call("EmailSubmission/get", ids=[created["id"]])["list"]
    assert got["emailId"] == email_id and got["identityId"] == identity(alice)
    assert got["envelope"] == created["envelope"] and got["threadId"] == created["threadId"]
    assert got["dsnBlobIds"] == [] and got["mdnBlobIds"] == []
    assert got["deliveryStatus"] == {
        r: {"smtpReply": "250 2.1.5 OK", "delivered": "unknown", "displayed": "unknown"} for r in rcpts
    }
    changes = alice.call("EmailSubmission/changes", sinceState=before)
    assert changes["created"] == [created["id"]] and changes["newState"] == out["newState"] != before


def test_given_envelope_is_used_as_is(alice, services, sink):
    email_id = draft(services, alice.account_id)
    envelope = {"mailFrom": {"email": "", "parameters": None}, "rcptTo": [{"email": "zed@remote.example"}]}
    created = submit(alice, email_id, envelope=envelope)["created"]["k"]
    assert "envelope" not in created or created["envelope"]["rcptTo"][0]["email"] == "zed@remote.example"
    [sent] = sink.wait(1)
    assert sent["mail_from"] == "<>" and sent["rcpt_tos"] == ["zed@remote.example"]  # the null sender


def test_sender_header_gives_mail_from(alice, services, sink):
    headers = (
        "From: Alice <alice@example.org>, alice@example.org\r\nSender: alice@example.org\r\nTo: x@remote.example\r\n"
    )
    submit(alice, draft(services, alice.account_id, headers))
    assert sink.wait(1)[0]["mail_from"] == "alice@example.org"


def test_local_recipients_are_delivered_locally(alice, bob, services, sink):
    headers = "From: alice@example.org\r\nTo: Bob <BOB@example.org>, far@remote.example\r\nBcc: bob@example.org\r\n"
    email_id = draft(services, alice.account_id, headers)
    created = submit(alice, email_id)["created"]["k"]
    [sent] = sink.wait(1)
    assert sent["rcpt_tos"] == ["far@remote.example"]  # bob is not relayed
    assert created["deliveryStatus"]["BOB@example.org"]["delivered"] == "yes"
    assert created["deliveryStatus"]["far@remote.example"]["delivered"] == "unknown"
    inbox = roles(services, bob.account_id)["inbox"]
    ids = bob.call("Email/query", filter={"inMailbox": inbox})["ids"]
    [email] = bob.call("Email/get", ids=ids, properties=["bcc", "keywords"])["list"]
    assert email["bcc"] is None and email["keywords"] == {}
    raw = raw_of(services, bob.account_id, ids[0])
    assert raw.startswith(b"Return-Path: <alice@example.org>\r\nReceived: by ")
    assert raw.endswith(strip_bcc(raw_of(services, alice.account_id, email_id)))


def test_local_only_needs_no_relay(alice, bob, services, sink, monkeypatch):
    monkeypatch.setattr(services.smtp_relay, "address", None)
    local = draft(services, alice.account_id, "From: alice@example.org\r\nTo: bob@example.org\r\n")
    assert submit(alice, local)["created"]["k"]["deliveryStatus"]["bob@example.org"]["delivered"] == "yes"
    remote = draft(services, alice.account_id, "From: alice@example.org\r\nTo: bob@example.org, x@remote.example\r\n")
    error = refused(alice, remote)
    assert error["type"] == "forbiddenToSend" and "JMAPMONO_SMTP_RELAY" in error["description"]
    assert len(services.mailboxes.get_mailboxes(bob.account_id)[0]) and sink.messages() == []
    inbox = roles(services, bob.account_id)["inbox"]
    assert len(bob.call("Email/query", filter={"inMailbox": inbox})["ids"]) == 1  # not delivered twice


def test_per_recipient_status_when_the_relay_refuses_some(alice, services, sink):
    headers = "From: alice@example.org\r\nTo: ok@remote.example, reject@remote.example, spam@remote.example\r\n"
    created = submit(alice, draft(services, alice.account_id, headers))["created"]["k"]
    status = created["deliveryStatus"]
    assert status["ok@remote.example"]["delivered"] == "unknown"
    assert status["reject@remote.example"] == {
        "smtpReply": "550 5.1.1 No such user here",
        "delivered": "no",
        "displayed": "unknown",
    }
    assert status["spam@remote.example"]["smtpReply"] == (
        "550 5.7.1 Our system has detected that this message is likely spam."
    )
    assert sink.wait(1)[0]["rcpt_tos"] == ["ok@remote.example"]


def test_strip_bcc_keeps_every_other_byte():
    raw = b"From: a@x\r\nBCC: b@x,\r\n\tc@x\r\nTo: d@x\r\nResent-Bcc: e@x\r\nX-Bcc: keep\r\n\r\nBcc: body\r\n"
    assert strip_bcc(raw) == b"From: a@x\r\nTo: d@x\r\nX-Bcc: keep\r\n\r\nBcc: body\r\n"
    assert strip_bcc(b"Bcc: b@x\nTo: d@x\n\nbody\n") == b"To: d@x\n\nbody\n"
    assert strip_bcc(b"To: d@x\r\n\r\n") == b"To: d@x\r\n\r\n"


# --- line ends: what is checked is what is sent -------------------------------------------------------------------


def imported(client, services, raw: bytes) -> str:
    """Upload ``raw`` and Email/import it into Drafts over JMAP; its email id."""
    blob = upload(client, raw, "message/rfc822")
    drafts = roles(services, client.account_id)["drafts"]
    out = client.call("Email/import", emails={"m": {"blobId": blob, "mailboxIds": {drafts: True}}})
    return out["created"]["m"]["id"]


@pytest.mark.parametrize(
    "raw",
    [
        b"From: <alice@example.org>\rFrom: ceo@bank.example\r\nTo: x@remote.example\r\n\r\nPay.\r\n",
        b"From: alice@example.org\r\nTo: x@remote.example\r\n\r\nHi\r.\rMAIL FROM:<ceo@bank.example>\r\n",
        b"From: alice@example.org\r\nTo: x@remote.example\r\nSubject: a\x00b\r\n\r\nHi\r\n",
    ],
    ids=["bare-cr-forged-from", "bare-cr-smuggled-end-of-data", "nul"],
)
def test_bare_cr_and_nul_are_refused_before_anything_is_checked_or_sent(alice, services, sink, raw):
    got = refused(alice, imported(alice, services, raw))
    assert got["type"] == "invalidEmail", got
    assert "CR" in got["description"] or "NUL" in got["description"]
    assert alice.call("EmailSubmission/get", ids=None)["list"] == [] and sink.messages() == []


def test_lf_only_messages_are_sent_with_crlf_and_checked_as_sent(alice, services, sink):
    raw = b"From: Alice <alice@example.org>\nTo: x@remote.example\nSubject: unix\n\nLine one\n.hidden dot\n"
    submit(alice, imported(alice, services, raw))
    [sent] = sink.wait(1)
    assert sent["data"] == raw.replace(b"\n", b"\r\n")  # dot-stuffing undone by the relay: the same bytes
    forged = b"From: alice@example.org\nFrom: ceo@bank.example\nTo: x@remote.example\n\nPay.\n"
    assert refused(alice, imported(alice, services, forged))["type"] == "invalidEmail"  # two From fields
    assert len(sink.messages()) == 1


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, error, props",
    [
        ("To: x@remote.example\r\n", "invalidEmail", ["from"]),
        ("From: alice@example.org\r\nFrom: alice@example.org\r\nTo: x@remote.example\r\n", "invalidEmail", ["from"]),
        ("From: alice@example.org, alice@example.org\r\nTo: x@remote.example\r\n", "invalidEmail", ["from", "sender"]),
        (
            "From: alice@example.org\r\nSender: a@example.org, b@example.org\r\nTo: x@r.example\r\n",
            "invalidEmail",
            None,
        ),
        ("From: Mallory <mallory@example.org>\r\nTo: x@remote.example\r\n", "forbiddenFrom", None),
        ("From: alice@example.org\r\nSender: bob@example.org\r\nTo: x@remote.example\r\n", "forbiddenFrom", None),
        ("From: alice@example.org\r\nSubject: nobody\r\n", "noRecipients", None),
        ("From: alice@example.org\r\nTo: undisclosed-recipients:;\r\n", "noRecipients", None),
        ("From: alice@example.org\r\nTo: not-an-address\r\n", "invalidRecipients", None),
        ("From: alice@example.org\r\nTo: reject@remote.example\r\n", "invalidRecipients", None),
        ("From: alice@example.org\r\nTo: tempfail@remote.example\r\n", "forbiddenToSend", None),
    ],
)
def test_refused_emails_send_nothing(alice, services, sink, headers, error, props):
    email_id = draft(services, alice.account_id, headers)
    state = alice.call("EmailSubmission/get", ids=[])["state"]
    got = refused(alice, email_id)
    assert got["type"] == error, got
    if props is not None:
        assert got["properties"] == props
    if error == "invalidRecipients":
        assert got["invalidRecipients"] == [headers.split("To: ")[1].strip()]
    assert alice.call("EmailSubmission/get", ids=None)["list"] == []
    assert alice.call("EmailSubmission/get", ids=[])["state"] == state
    assert sink.messages() == []


@pytest.mark.parametrize(
    "envelope, error, extra",
    [
        (
            {"mailFrom": {"email": "bob@example.org"}, "rcptTo": [{"email": "x@remote.example"}]},
            "forbiddenMailFrom",
            {},
        ),
        ({"mailFrom": {"email": "alice@example.org"}, "rcptTo": []}, "noRecipients", {}),
        (
            {"mailFrom": {"email": "alice@example.org"}, "rcptTo": [{"email": "a@b@c"}, {"email": "no way"}]},
            "invalidRecipients",
            {"invalidRecipients": ["a@b@c", "no way"]},
        ),
        (
            {"mailFrom": {"email": "alice@example.org"}, "rcptTo": [{"email": f"u{i}@r.example"} for i in range(101)]},
            "tooManyRecipients",
            {"maxRecipients": MAX_RECIPIENTS},
        ),
        (
            {"mailFrom": {"email": "alice@example.org", "parameters": {"RET": "HDRS"}}, "rcptTo": []},
            "invalidProperties",
            {"properties": ["envelope"]},
        ),
        ({"mailFrom": "alice@example.org", "rcptTo": []}, "invalidProperties", {"properties": ["envelope"]}),
        ({"rcptTo": []}, "invalidProperties", {"properties": ["envelope"]}),
    ],
)
def test_envelope_errors(alice, services, sink, envelope, error, extra):
    got = refused(alice, draft(services, alice.account_id), envelope=envelope)
    assert got["type"] == error, got
    for key, value in extra.items():
        assert got[key] == value
    assert sink.messages() == []


def test_object_errors(alice, services, sink):
    email_id = draft(services, alice.account_id)
    me = identity(alice)
    calls = {
        "a": {"identityId": "Inope", "emailId": email_id},
        "b": {"identityId": me, "emailId": "Mnope"},
        "c": {"identityId": me},
        "d": {"identityId": me, "emailId": email_id, "color": "red"},
        "e": {"identityId": me, "emailId": email_id, "undoStatus": "pending"},
        "f": {"identityId": me, "emailId": email_id, "sendAt": "2024-01-01T00:00:00Z"},
        "g": {"identityId": me, "emailId": "#unknown"},
    }
    out = alice.call("EmailSubmission/set", create=calls)
    expected = {
        "a": ["identityId"],
        "b": ["emailId"],
        "c": ["emailId"],
        "d": ["color"],
        "e": ["undoStatus"],
        "f": ["sendAt"],
        "g": ["emailId"],
    }
    assert out["created"] is None
    assert {k: (v["type"], v["properties"]) for k, v in out["notCreated"].items()} == {
        k: ("invalidProperties", v) for k, v in expected.items()
    }
    assert sink.messages() == []


def test_another_accounts_email_is_not_found(alice, bob, services):
    theirs = draft(services, bob.account_id, "From: bob@example.org\r\nTo: x@remote.example\r\n")
    assert refused(alice, theirs)["properties"] == ["emailId"]


def test_too_large(alice, services, sink, monkeypatch):
    monkeypatch.setattr(services.submissions, "config", services.config.with_overrides(max_message_size=100))
    got = refused(alice, draft(services, alice.account_id, body="x" * 200 + "\r\n"))
    assert got["type"] == "tooLarge" and got["maxSize"] == 100
    assert sink.messages() == []


def test_relay_down_is_forbidden_to_send(alice, services, monkeypatch):
    from tests.support.servers import free_port

    monkeypatch.setattr(services.smtp_relay, "address", f"127.0.0.1:{free_port()}")
    got = refused(alice, draft(services, alice.account_id))
    assert got["type"] == "forbiddenToSend" and "nothing was sent" in got["description"]


def test_if_in_state(alice, services, sink):
    assert alice.error("EmailSubmission/set", ifInState="nope", create={})["type"] == "stateMismatch"
    email_id = draft(services, alice.account_id)
    state = alice.call("EmailSubmission/get", ids=[])["state"]
    out = alice.call(
        "EmailSubmission/set", ifInState=state, create={"k": {"identityId": identity(alice), "emailId": email_id}}
    )
    assert out["created"]["k"]["id"]
    assert alice.error("EmailSubmission/set", ifInState=state, create={})["type"] == "stateMismatch"
    assert len(sink.wait(1)) == 1


def test_relay_login(alice, services, tmp_path, monkeypatch):
    secured = SmtpSink(tmp_path / "auth", auth="jmap:s3cret")
    try:
        monkeypatch.setattr(services.smtp_relay, "address", secured.address)
        monkeypatch.setattr(services.smtp_relay, "user", "jmap")
        monkeypatch.setattr(services.smtp_relay, "password", "wrong")
        got = refused(alice, draft(services, alice.account_id))
        assert got["type"] == "forbiddenToSend" and "535" not in got["description"]  # the relay's answer is logged
        monkeypatch.setattr(services.smtp_relay, "password", "s3cret")
        assert submit(alice, draft(services, alice.account_id))["created"]
        assert secured.wait(1)[0]["login"] == "jmap"
    finally:
        secured.stop()


# --- update, destroy, implicit Email/set --------------------------------------------------------------------------


def test_update_and_destroy(alice, services, sink):
    sid = submit(alice, draft(services, alice.account_id))["created"]["k"]["id"]
    state = alice.call("EmailSubmission/get", ids=[])["state"]
    out = alice.call(
        "EmailSubmission/set",
        update={sid: {"undoStatus": "canceled"}, "Snope": {"undoStatus": "canceled"}},
    )
    assert out["notUpdated"][sid]["type"] == "cannotUnsend"
    assert out["notUpdated"]["Snope"]["type"] == "notFound"
    out = alice.call("EmailSubmission/set", update={sid: {"emailId": "Mother"}})
    assert out["notUpdated"][sid] == {**out["notUpdated"][sid], "type": "invalidProperties", "properties": ["emailId"]}
    assert alice.call("EmailSubmission/set", update={sid: {"undoStatus": "final"}})["updated"] == {sid: None}
    assert alice.call("EmailSubmission/get", ids=[])["state"] == state  # nothing changed so far
    out = alice.call("EmailSubmission/set", destroy=[sid, "Snope"])
    assert out["destroyed"] == [sid] and out["notDestroyed"]["Snope"]["type"] == "notFound"
    assert alice.call("EmailSubmission/get", ids=[sid])["notFound"] == [sid]
    changes = alice.call("EmailSubmission/changes", sinceState=state)
    assert changes["destroyed"] == [sid] and changes["newState"] == out["newState"]


def test_rfc_example_on_success_update_email_moves_the_draft_to_sent(alice, services, sink):
    mailboxes = roles(services, alice.account_id)
    email_id = draft(services, alice.account_id)
    email_state = alice.call("Email/get", ids=[])["state"]
    responses = alice.responses(
        [
            [
                "EmailSubmission/set",
                {
                    "accountId": alice.account_id,
                    "create": {"k1490": {"identityId": identity(alice), "emailId": email_id}},
                    "onSuccessUpdateEmail": {
                        "#k1490": {
                            f"mailboxIds/{mailboxes['drafts']}": None,
                            f"mailboxIds/{mailboxes['sent']}": True,
                            "keywords/$draft": None,
                        }
                    },
                },
                "0",
            ]
        ]
    )
    assert [(name, call_id) for name, _, call_id in responses] == [("EmailSubmission/set", "0"), ("Email/set", "0")]
    assert responses[0][1]["created"]["k1490"]["id"]
    implicit = responses[1][1]
    assert implicit["updated"] == {email_id: None} and implicit["oldState"] == email_state
    [email] = alice.call("Email/get", ids=[email_id], properties=["mailboxIds", "keywords"])["list"]
    assert email["mailboxIds"] == {mailboxes["sent"]: True}
    assert email["keywords"] == {"$seen": True}
    assert len(sink.wait(1)) == 1


def test_on_success_destroy_email(alice, services, sink):
    email_id = draft(services, alice.account_id)
    responses = alice.responses(
        [
            [
                "EmailSubmission/set",
                {
                    "accountId": alice.account_id,
                    "create": {"s": {"identityId": identity(alice), "emailId": email_id}},
                    "onSuccessDestroyEmail": ["#s"],
                },
                "c",
            ]
        ]
    )
    assert responses[1][0] == "Email/set" and responses[1][1]["destroyed"] == [email_id]
    assert alice.call("Email/get", ids=[email_id])["notFound"] == [email_id]
    sid = responses[0][1]["created"]["s"]["id"]
    [submission] = alice.call("EmailSubmission/get", ids=[sid])["list"]
    assert submission["emailId"] == email_id  # the record outlives the email


def test_no_implicit_email_set_when_the_submission_fails(alice, services, sink):
    email_id = draft(services, alice.account_id, "From: mallory@example.org\r\nTo: x@remote.example\r\n")
    responses = alice.responses(
        [
            [
                "EmailSubmission/set",
                {
                    "accountId": alice.account_id,
                    "create": {"s": {"identityId": identity(alice), "emailId": email_id}},
                    "onSuccessDestroyEmail": ["#s"],
                },
                "c",
            ]
        ]
    )
    assert [r[0] for r in responses] == ["EmailSubmission/set"]
    assert alice.call("Email/get", ids=[email_id])["list"]


def test_draft_and_identity_created_earlier_in_the_same_request(alice, services, sink):
    drafts, sent = roles(services, alice.account_id)["drafts"], roles(services, alice.account_id)["sent"]
    responses = alice.responses(
        [
            ["Identity/set", {"accountId": alice.account_id, "create": {"me": {"email": "alice@example.org"}}}, "0"],
            [
                "Email/set",
                {
                    "accountId": alice.account_id,
                    "create": {
                        "draft": {
                            "mailboxIds": {drafts: True},
                            "keywords": {"$draft": True, "$seen": True},
                            "from": [{"name": "Alice", "email": "alice@example.org"}],
                            "to": [{"name": "Zed", "email": "zed@remote.example"}],
                            "bcc": [{"name": None, "email": "hidden@remote.example"}],
                            "subject": "Composed by JMAP",
                            "bodyValues": {"b": {"value": "Hello Zed"}},
                            "textBody": [{"partId": "b", "type": "text/plain"}],
                        }
                    },
                },
                "1",
            ],
            [
                "EmailSubmission/set",
                {
                    "accountId": alice.account_id,
                    "create": {"send": {"identityId": "#me", "emailId": "#draft"}},
                    "onSuccessUpdateEmail": {
                        "#send": {f"mailboxIds/{drafts}": None, f"mailboxIds/{sent}": True, "keywords/$draft": None}
                    },
                },
                "2",
            ],
        ]
    )
    assert [r[0] for r in responses] == ["Identity/set", "Email/set", "EmailSubmission/set", "Email/set"]
    email_id = responses[1][1]["created"]["draft"]["id"]
    created = responses[2][1]["created"]["send"]
    assert created["emailId"] == email_id and created["identityId"] == responses[0][1]["created"]["me"]["id"]
    assert responses[3][1]["updated"] == {email_id: None}
    [message] = sink.wait(1)
    assert message["rcpt_tos"] == ["zed@remote.example", "hidden@remote.example"]
    assert b"Subject: Composed by JMAP" in message["data"] and b"hidden@" not in message["data"]


# --- query --------------------------------------------------------------------------------------------------------


def test_query(alice, services, sink):
    me = identity(alice)
    other = alice.call("Identity/set", create={"o": {"email": "alice@example.org", "name": "Other"}})
    other_id = other["created"]["o"]["id"]
    emails = [draft(services, alice.account_id) for _ in range(3)]
    sids = []
    for i, email_id in enumerate(emails):
        out = submit(alice, email_id, identity_id=other_id if i == 2 else me)
        sids.append(out["created"]["k"]["id"])
    sink.wait(3)
    submissions = {s["id"]: s for s in alice.call("EmailSubmission/get", ids=None)["list"]}
    state = alice.call("EmailSubmission/get", ids=[])["state"]

    def query(**args):
        return alice.call("EmailSubmission/query", args)

    everything = query(calculateTotal=True)
    assert everything["ids"] == sids and everything["total"] == 3 and everything["queryState"] == state
    assert everything["canCalculateChanges"] is False and everything["position"] == 0
    assert query(filter={"emailIds": [emails[1]]})["ids"] == [sids[1]]
    assert query(filter={"identityIds": [other_id]})["ids"] == [sids[2]]
    assert query(filter={"threadIds": [submissions[sids[0]]["threadId"]]})["ids"] == [sids[0]]
    assert query(filter={"undoStatus": "final"})["ids"] == sids
    assert query(filter={"undoStatus": "pending"})["ids"] == []
    assert query(filter={"before": "2000-01-01T00:00:00Z"})["ids"] == []
    assert query(filter={"after": "2000-01-01T00:00:00Z", "before": "2999-01-01T00:00:00Z"})["ids"] == sids
    assert query(filter={"after": submissions[sids[2]]["sendAt"]})["ids"][-1] == sids[2]
    assert query(filter={"operator": "NOT", "conditions": [{"emailIds": [emails[0]]}]})["ids"] == sids[1:]
    assert query(filter={"operator": "OR", "conditions": [{"emailIds": [emails[0]]}, {"identityIds": [other_id]}]})[
        "ids"
    ] == [sids[0], sids[2]]
    by_email = sorted(sids, key=lambda s: submissions[s]["emailId"], reverse=True)
    assert query(sort=[{"property": "emailId", "isAscending": False}])["ids"] == by_email
    assert query(sort=[{"property": "sentAt", "isAscending": False}])["ids"] == sids[::-1]
    assert query(sort=[{"property": "threadId"}])["ids"] == sorted(sids, key=lambda s: submissions[s]["threadId"])
    page = query(position=1, limit=1, calculateTotal=True)
    assert (page["ids"], page["position"], page["total"]) == ([sids[1]], 1, 3)
    assert query(anchor=sids[2], anchorOffset=-1)["ids"] == sids[1:]
    assert alice.error("EmailSubmission/query", sort=[{"property": "size"}])["type"] == "unsupportedSort"
    assert alice.error("EmailSubmission/query", filter={"subject": "x"})["type"] == "unsupportedFilter"
    assert alice.error("EmailSubmission/query", filter={"before": "yesterday"})["type"] == "invalidArguments"
    assert alice.error("EmailSubmission/query", anchor="Snope")["type"] == "anchorNotFound"
    error = alice.error("EmailSubmission/queryChanges", sinceQueryState=state)
    assert error["type"] == "cannotCalculateChanges"


def test_delegate_sends_from_the_owners_account(services, alice, bob, sink):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    email_id = draft(services, alice.account_id)
    alice_identity = identity(alice)
    out = bob.call(
        "EmailSubmission/set",
        {"accountId": alice.account_id, "create": {"k": {"identityId": alice_identity, "emailId": email_id}}},
    )
    assert out["created"]["k"]["id"]
    assert sink.wait(1)[0]["mail_from"] == "alice@example.org"
    mine = JmapClient(bob.client, bob.email, bob.account_id)
    assert mine.call("EmailSubmission/get", ids=None)["list"] == []  # recorded in alice's account


def test_submissions_made_in_one_millisecond_are_listed_and_sorted_in_the_order_made(alice, bob, services, monkeypatch):
    """/get (all: oldest first) and /query by sentAt: ties on sendAt go by creation, however close."""
    headers = "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Local\r\n"  # no relay
    emails = [draft(services, alice.account_id, headers=headers) for _ in range(6)]
    me = identity(alice)
    with one_millisecond(monkeypatch):
        out = alice.call(
            "EmailSubmission/set", create={f"k{i}": {"identityId": me, "emailId": e} for i, e in enumerate(emails)}
        )
    sids = [out["created"][f"k{i}"]["id"] for i in range(len(emails))]
    listed = alice.call("EmailSubmission/get", ids=None)["list"]
    assert len({s["sendAt"] for s in listed}) == 1  # they tie on the time
    assert [s["id"] for s in listed] == sids
    assert alice.call("EmailSubmission/query", {})["ids"] == sids
    descending = alice.call("EmailSubmission/query", sort=[{"property": "sentAt", "isAscending": False}])["ids"]
    assert descending == sids[::-1]
