"""RFC 8621 conformance for sending, black-box through POST /jmap/api, grouped by RFC section:
§6 Identity, §7 EmailSubmission, §8 VacationResponse.

The RFC's own examples are reproduced, and the expert rulings on singleton errors and on the implicit
Email/set of a submission (processed at once, its response right after the submission's).
"""

from __future__ import annotations

import re

from tests.support.emails import roles
from tests.support.jmap import JmapClient

PLAIN_UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


# --- §6 Identity ------------------------------------------------------------------------------------------------------


def test_rfc_6_4_identity_get_example_shape(alice):
    got = alice.call("Identity/get", {})  # ids omitted: every identity
    assert set(got) == {"accountId", "state", "list", "notFound"}
    (default,) = got["list"]
    assert set(default) == {
        "id",
        "name",
        "email",
        "replyTo",
        "bcc",
        "textSignature",
        "htmlSignature",
        "mayDelete",
    }
    assert default["email"] == "alice@example.org" and default["mayDelete"] is False
    assert (default["name"], default["textSignature"], default["htmlSignature"]) == ("", "", "")
    assert default["replyTo"] is None and default["bcc"] is None


def test_identity_set(alice):
    default = alice.call("Identity/get", ids=None)["list"][0]["id"]
    since = alice.call("Identity/get", ids=[])["state"]
    result = alice.call(
        "Identity/set",
        create={
            "work": {
                "email": "alice@example.org",
                "name": "Alice at work",
                "bcc": [{"name": None, "email": "a@x.org"}],
            },
            "other": {"email": "mallory@example.org"},
            "noemail": {"name": "x"},
        },
        update={default: {"textSignature": "-- \nAlice"}},
        destroy=[default],
    )
    work = result["created"]["work"]
    assert set(work) >= {"id", "mayDelete"} and work["mayDelete"] is True
    assert work["replyTo"] is None and work["textSignature"] == "" and work["htmlSignature"] == ""  # defaults
    assert result["notCreated"]["other"]["type"] == "forbiddenFrom"
    assert result["notCreated"]["noemail"]["type"] == "invalidProperties"
    assert result["updated"] == {default: None}
    assert result["notDestroyed"][default]["type"] == "forbidden"  # mayDelete: false
    immutable = alice.call("Identity/set", update={work["id"]: {"email": "alice2@example.org"}})
    assert immutable["notUpdated"][work["id"]]["properties"] == ["email"]
    # What the server stored otherwise than the patch said comes back in updated (an address gains its name).
    normalised = alice.call("Identity/set", update={work["id"]: {"replyTo": [{"email": "r@example.org"}]}})
    assert normalised["updated"] == {work["id"]: {"replyTo": [{"name": None, "email": "r@example.org"}]}}

    changes = alice.call("Identity/changes", sinceState=since)
    assert (changes["created"], sorted(changes["updated"])) == ([work["id"]], [default])
    assert changes["newState"] == normalised["newState"] == alice.call("Identity/get", ids=[])["state"]
    destroyed = alice.call("Identity/set", destroy=[work["id"]])
    assert destroyed["destroyed"] == [work["id"]]
    assert alice.call("Identity/changes", sinceState=normalised["newState"])["destroyed"] == [work["id"]]


# --- §7 EmailSubmission -----------------------------------------------------------------------------------------------


def draft(client: JmapClient, services, **overrides) -> str:
    obj = {
        "mailboxIds": {roles(services, client.account_id)["drafts"]: True},
        "keywords": {"$draft": True},
        "from": [{"name": "Alice", "email": "alice@example.org"}],
        "to": [{"name": "Bob", "email": "bob@example.org"}],
        "bcc": [{"name": None, "email": "bob@example.org"}],
        "subject": "Hello",
        "textBody": [{"partId": "1", "type": "text/plain"}],
        "bodyValues": {"1": {"value": "Hello Bob"}},
    }
    obj.update(overrides)
    result = client.call("Email/set", create={"d": {k: v for k, v in obj.items() if v is not None}})
    assert result["notCreated"] is None, result
    return result["created"]["d"]["id"]


def test_rfc_7_5_1_send_and_move_to_sent_with_the_implicit_email_set(alice, bob, services):
    boxes = roles(services, alice.account_id)
    identity = alice.call("Identity/get", ids=None)["list"][0]["id"]
    email = draft(alice, services)
    since = alice.call("EmailSubmission/get", ids=[])["state"]
    responses = alice.responses(
        [
            [
                "EmailSubmission/set",
                {
                    "accountId": alice.account_id,
                    "create": {"k1490": {"identityId": identity, "emailId": email, "envelope": None}},
                    "onSuccessUpdateEmail": {
                        "#k1490": {
                            f"mailboxIds/{boxes['drafts']}": None,
                            f"mailboxIds/{boxes['sent']}": True,
                            "keywords/$draft": None,
                        }
                    },
                },
                "0",
            ]
        ]
    )
    assert [(r[0], r[2]) for r in responses] == [("EmailSubmission/set", "0"), ("Email/set", "0")]
    submission = responses[0][1]["created"]["k1490"]
    assert responses[1][1]["updated"] == {email: None}
    # Server-set properties come back; the envelope was generated from the headers, Bcc included.
    assert submission["undoStatus"] in ("pending", "final")
    assert PLAIN_UTC_DATE.fullmatch(submission["sendAt"]), submission["sendAt"]
    assert submission["envelope"] == {
        "mailFrom": {"email": "alice@example.org", "parameters": None},
        "rcptTo": [{"email": "bob@example.org", "parameters": None}],
    }
    assert submission["dsnBlobIds"] == [] and submission["mdnBlobIds"] == []
    status = submission["deliveryStatus"]["bob@example.org"]
    assert status["delivered"] in ("queued", "yes", "no", "unknown") and status["displayed"] in ("unknown", "yes")
    assert re.match(r"\d{3} \d\.\d{1,3}\.\d{1,3} ", status["smtpReply"])
    (sent,) = alice.call("Email/get", ids=[email], properties=["mailboxIds", "keywords"])["list"]
    assert sent["mailboxIds"] == {boxes["sent"]: True} and "$draft" not in sent["keywords"]

    got = alice.call("EmailSubmission/get", ids=[submission["id"]])["list"][0]
    assert got["emailId"] == email and got["identityId"] == identity and got["sendAt"] == submission["sendAt"]
    assert alice.call("EmailSubmission/changes", sinceState=since)["created"] == [submission["id"]]
    # Bob got it, without the Bcc header field.
    (received,) = bob.call("Email/query", {})["ids"]
    headers = bob.call("Email/get", ids=[received], properties=["headers"])["list"][0]["headers"]
    assert "bcc" not in {h["name"].lower() for h in headers}


def test_submission_create_errors(alice, services):
    identity = alice.call("Identity/get", ids=None)["list"][0]["id"]
    ok = draft(alice, services)
    no_rcpt = draft(alice, services, to=None, bcc=None)
    bad_from = draft(alice, services, **{"from": [{"name": None, "email": "mallory@example.org"}]})
    result = alice.call(
        "EmailSubmission/set",
        create={
            "noEmail": {"identityId": identity, "emailId": "Mnope"},
            "noIdentity": {"identityId": "Inope", "emailId": ok},
            "noRcpt": {"identityId": identity, "emailId": no_rcpt},
            "badFrom": {"identityId": identity, "emailId": bad_from},
            "badMailFrom": {
                "identityId": identity,
                "emailId": ok,
                "envelope": {"mailFrom": {"email": "mallory@example.org"}, "rcptTo": [{"email": "bob@example.org"}]},
            },
            "badRcpt": {
                "identityId": identity,
                "emailId": ok,
                "envelope": {"mailFrom": {"email": "alice@example.org"}, "rcptTo": [{"email": "not an address"}]},
            },
        },
    )
    nc = result["notCreated"]
    assert result["created"] is None and result["newState"] == result["oldState"]
    assert nc["noEmail"]["type"] == "invalidProperties" and nc["noEmail"]["properties"] == ["emailId"]
    assert nc["noIdentity"]["type"] == "invalidProperties" and nc["noIdentity"]["properties"] == ["identityId"]
    assert nc["noRcpt"]["type"] == "noRecipients"
    assert nc["badFrom"]["type"] == "forbiddenFrom"
    assert nc["badMailFrom"]["type"] == "forbiddenMailFrom"
    assert nc["badRcpt"]["type"] == "invalidRecipients" and nc["badRcpt"]["invalidRecipients"] == ["not an address"]


def test_submission_update_destroy_and_on_success_destroy_email(alice, bob, services):
    identity = alice.call("Identity/get", ids=None)["list"][0]["id"]
    email = draft(alice, services)
    envelope = {  # as in the §7.5.1 request
        "mailFrom": {"email": "alice@example.org", "parameters": None},
        "rcptTo": [{"email": "bob@example.org", "parameters": None}],
    }
    created = alice.call(
        "EmailSubmission/set", create={"s": {"identityId": identity, "emailId": email, "envelope": envelope}}
    )
    sid = created["created"]["s"]["id"]
    assert alice.call("EmailSubmission/get", ids=[sid], properties=["envelope"])["list"][0]["envelope"] == envelope
    if created["created"]["s"]["undoStatus"] == "final":
        refused = alice.call("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}})
        assert refused["notUpdated"][sid]["type"] == "cannotUnsend"
    immutable = alice.call("EmailSubmission/set", update={sid: {"emailId": "Mother"}})
    assert immutable["notUpdated"][sid]["type"] == "invalidProperties"
    responses = alice.responses(
        [
            [
                "EmailSubmission/set",
                {"accountId": alice.account_id, "destroy": [sid], "onSuccessDestroyEmail": [sid]},
                "0",
            ]
        ]
    )
    assert responses[0][1]["destroyed"] == [sid]
    assert responses[1][0] == "Email/set" and responses[1][1]["destroyed"] == [email]
    # Destroying the record does not touch the delivery; the submission is gone from /get.
    assert alice.call("EmailSubmission/get", ids=[sid])["notFound"] == [sid]


def test_submission_query(alice, bob, services):
    identity = alice.call("Identity/get", ids=None)["list"][0]["id"]
    emails = [draft(alice, services, subject=f"S{i}") for i in range(2)]
    sids = [
        alice.call("EmailSubmission/set", create={"s": {"identityId": identity, "emailId": e}})["created"]["s"]["id"]
        for e in emails
    ]
    result = alice.call("EmailSubmission/query", sort=[{"property": "sentAt"}], calculateTotal=True)
    assert result["ids"] == sids and result["total"] == 2
    assert alice.call("EmailSubmission/query", sort=[{"property": "sentAt", "isAscending": False}])["ids"] == sids[::-1]
    assert alice.call("EmailSubmission/query", filter={"emailIds": [emails[1]]})["ids"] == [sids[1]]
    assert alice.call("EmailSubmission/query", filter={"before": "2000-01-01T00:00:00Z"})["ids"] == []
    for prop in ("emailId", "threadId"):
        assert sorted(alice.call("EmailSubmission/query", sort=[{"property": prop}])["ids"]) == sorted(sids)


# --- §8 VacationResponse ----------------------------------------------------------------------------------------------


def test_vacation_response_singleton(alice):
    got = alice.call("VacationResponse/get", {})
    assert set(got) == {"accountId", "state", "list", "notFound"}
    assert got["list"] == [
        {
            "id": "singleton",
            "isEnabled": False,
            "fromDate": None,
            "toDate": None,
            "subject": None,
            "textBody": None,
            "htmlBody": None,
        }
    ]
    assert alice.call("VacationResponse/get", ids=["singleton", "other"])["notFound"] == ["other"]
    result = alice.call(
        "VacationResponse/set",
        create={"new": {"isEnabled": True}},
        destroy=["singleton"],
        update={"singleton": {"isEnabled": True, "fromDate": "2030-01-01T00:00:00Z", "subject": "Away"}},
    )
    assert result["notCreated"]["new"]["type"] == "singleton"
    assert result["notDestroyed"]["singleton"]["type"] == "singleton"
    assert result["updated"] == {"singleton": None} and result["oldState"] == got["state"]
    after = alice.call("VacationResponse/get", ids=None)
    assert after["state"] == result["newState"] != got["state"]
    vacation = after["list"][0]
    assert (vacation["isEnabled"], vacation["fromDate"], vacation["subject"]) == (
        True,
        "2030-01-01T00:00:00Z",
        "Away",
    )
    bad = alice.call(
        "VacationResponse/set",
        update={"singleton": {"toDate": "2030-01-01T00:00:00+01:00", "isEnabled": "yes", "textBody": 5}},
    )
    assert set(bad["notUpdated"]["singleton"]["properties"]) == {"toDate", "isEnabled", "textBody"}
    assert alice.error("VacationResponse/set", ifInState="stale", update={})["type"] == "stateMismatch"
    # A date is stored as a UTCDate whose zero fraction is omitted (RFC 8620 §1.4): updated says so.
    zero = alice.call("VacationResponse/set", update={"singleton": {"toDate": "2030-02-01T00:00:00.000Z"}})
    assert zero["updated"] == {"singleton": {"toDate": "2030-02-01T00:00:00Z"}}
