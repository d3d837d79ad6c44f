"""Sieve scripts run at delivery, over real LMTP against a real ``python -m jmapmono lmtp`` process: each
action of RFC 5228 §4 and its extensions, what the MTA is answered, and what is stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import LmtpProcess, start_lmtp
from tests.support.sieve import activate
from tests.support.waiting import wait_until

ALICE, BOB = "alice@example.org", "bob@example.org"
MESSAGE = (
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.org, bob@example.org\r\n"
    b"Subject: [jmap] weekly notes\r\nMessage-ID: <n1@remote.example>\r\n\r\nHello.\r\n"
)


@pytest.fixture
def users(services) -> None:
    services.accounts.create_user(ALICE)
    services.accounts.create_user(BOB)


@pytest.fixture
def lmtp(services, config, tmp_path, users, sink) -> Iterator[LmtpProcess]:
    """An LMTP server process on the test's database, relaying through the SMTP sink."""
    sink.clear()
    server = start_lmtp(config.database_url, tmp_path, JMAPMONO_SMTP_RELAY=sink.address)
    yield server
    server.stop()


def send(lmtp: LmtpProcess, rcpts: list[str], message: bytes = MESSAGE, sender: str = "carol@remote.example"):
    with lmtp.client() as client:
        client.mail(sender)
        for rcpt in rcpts:
            assert client.rcpt(rcpt).code == 250
        return client.data(message, len(rcpts))


def placed(services, email: str) -> list[tuple[list[str], list[str]]]:
    """Each stored message of ``email``: (names of its mailboxes, its keywords), oldest first."""
    user = services.accounts.get(email)
    with services.db.read() as tx:
        rows = tx.query("SELECT id FROM messages WHERE account_id = ? ORDER BY received_at, id", (user.account_id,))
        out = []
        for r in rows:
            boxes = tx.query(
                "SELECT b.name FROM message_mailboxes mm JOIN mailboxes b ON b.id = mm.mailbox_id "
                "WHERE mm.message_id = ? ORDER BY b.name",
                (r["id"],),
            )
            keywords = tx.query(
                "SELECT keyword FROM message_keywords WHERE message_id = ? ORDER BY keyword", (r["id"],)
            )
            out.append(([b["name"] for b in boxes], [k["keyword"] for k in keywords]))
    return out


def test_fileinto_create_and_flags(services, lmtp):
    """RFC 5228 §4.1 fileinto; RFC 5490 §3.2 ``:create`` makes a missing mailbox (here the path Lists/jmap);
    RFC 5232 §5 ``:flags`` and addflag set keywords on the stored message (``\\Seen`` is $seen)."""
    activate(
        services,
        ALICE,
        'require ["fileinto", "mailbox", "imap4flags"];\r\n'
        'if header :contains "subject" "[jmap]" {\r\n'
        '  fileinto :create :flags ["\\\\Seen", "$list"] "Lists/jmap";\r\n'
        "  stop;\r\n"
        "}\r\n"
        'addflag "$other";\r\n',
    )
    replies = send(lmtp, [ALICE])
    assert [r.code for r in replies] == [250]
    send(lmtp, [ALICE], MESSAGE.replace(b"[jmap] weekly", b"lunch"))
    assert placed(services, ALICE) == [(["jmap"], ["$list", "$seen"]), (["Inbox"], ["$other"])]
    with services.db.read() as tx:
        lists = tx.value("SELECT id FROM mailboxes WHERE name = 'Lists'")
        assert tx.value("SELECT parent_id FROM mailboxes WHERE name = 'jmap'") == lists


def test_discard_stores_nothing(services, lmtp):
    """RFC 5228 §4.4 discard: the delivery succeeds (250) and nothing is stored."""
    activate(services, ALICE, 'if address :domain :is "from" "remote.example" { discard; }\r\n')
    assert [r.code for r in send(lmtp, [ALICE, BOB])] == [250, 250]
    assert placed(services, ALICE) == [] and len(placed(services, BOB)) == 1


def test_reject_refuses_that_recipient_only(services, lmtp):
    """RFC 5429 §2.1-2.2: reject and ereject refuse the message in the protocol (LMTP 550 5.7.1 with the
    reason) for that recipient; the other recipient of the same transaction gets 250."""
    activate(services, BOB, 'require "ereject";\r\nif size :over 10 { ereject "no mail from\r\ncarol"; }\r\n')
    replies = send(lmtp, [BOB, ALICE])
    assert [(r.code, r.lines[0][:5]) for r in replies] == [(550, "5.7.1"), (250, "2.0.0")]
    assert "no mail from carol" in replies[0].text
    assert placed(services, BOB) == [] and len(placed(services, ALICE)) == 1


def test_a_script_failing_at_run_time_keeps_the_mail_in_the_inbox(services, lmtp):
    """RFC 5228 §2.10.6: a run-time error (fileinto a mailbox that does not exist, without :create) falls
    back to the implicit keep: the message is in the Inbox, nothing is lost."""
    activate(services, ALICE, 'require "fileinto";\r\nfileinto "Nowhere";\r\n')
    assert [r.code for r in send(lmtp, [ALICE])] == [250]
    assert placed(services, ALICE) == [(["Inbox"], [])]
    assert "sieve_failed" in lmtp.log()


def test_redirect_through_the_relay_and_a_loop_stopped(services, lmtp, sink):
    """RFC 5228 §4.2 redirect: the message goes out through the SMTP relay from the original envelope
    sender, and (no :copy) is not kept. Sent back to the same recipient, it is not redirected again (the
    loop is cut) but kept in the Inbox."""
    activate(services, ALICE, 'redirect "dave@elsewhere.example";\r\n')
    assert [r.code for r in send(lmtp, [ALICE])] == [250]
    (relayed,) = sink.wait(1)
    assert relayed["rcpt_tos"] == ["dave@elsewhere.example"] and relayed["mail_from"] == "carol@remote.example"
    assert relayed["data"].startswith(b"X-Jmapmono-Loop: alice@example.org\r\n")
    assert b"Return-Path:" not in relayed["data"] and b"Subject: [jmap] weekly notes" in relayed["data"]
    assert placed(services, ALICE) == []
    sink.clear()
    assert [r.code for r in send(lmtp, [ALICE], relayed["data"])] == [250]  # the message came back
    assert placed(services, ALICE) == [(["Inbox"], [])]
    assert "sieve_redirect_loop" in lmtp.log() and sink.messages() == []


def test_redirect_with_copy_and_between_local_users(services, lmtp, sink):
    """RFC 3894 ``:copy``: redirected and kept. A redirect to a user here is delivered to that user."""
    activate(services, ALICE, 'require "copy";\r\nredirect :copy "bob@example.org";\r\n')
    assert [r.code for r in send(lmtp, [ALICE])] == [250]
    assert placed(services, ALICE) == [(["Inbox"], [])]
    assert placed(services, BOB) == [(["Inbox"], [])]
    assert sink.messages() == []


def test_vacation_answers_once_per_sender(services, lmtp, sink):
    """RFC 5230 §4: the vacation action replies to the sender (Auto-Submitted: auto-replied, RFC 3834), at
    most once per sender within :days; the message itself is kept. With a VacationResponse enabled too, the
    script's reply replaces it for that message."""
    services.vacation.update(services.accounts.get(ALICE).account_id, {"is_enabled": True, "subject": "Away (JMAP)"})
    activate(services, ALICE, 'require "vacation";\r\nvacation :days 3 :subject "Away (Sieve)" "Back on Monday.";\r\n')
    assert [r.code for r in send(lmtp, [ALICE])] == [250]
    (reply,) = sink.wait(1)
    assert reply["rcpt_tos"] == ["carol@remote.example"] and reply["mail_from"] == "<>"
    assert b"Subject: Away (Sieve)" in reply["data"] and b"Auto-Submitted: auto-replied" in reply["data"]
    assert b"Back on Monday." in reply["data"]
    send(lmtp, [ALICE], MESSAGE.replace(b"<n1@", b"<n2@"))
    assert len(placed(services, ALICE)) == 2
    wait_until(lambda: "outcome=already-answered" in lmtp.log(), 10, message="the second reply declined")
    assert lmtp.log().count("event=sieve_vacation_reply") == 2 and "event=vacation_reply " not in lmtp.log()
    assert len(sink.messages()) == 1


def test_the_vacation_response_answers_when_the_script_has_no_vacation(services, lmtp, sink):
    """RFC 8621 §8 beside RFC 5228: a script that only files the message leaves the VacationResponse to
    answer it as before."""
    services.vacation.update(services.accounts.get(ALICE).account_id, {"is_enabled": True, "subject": "Away (JMAP)"})
    activate(services, ALICE, 'require "fileinto";\r\nfileinto "Archive";\r\n')
    assert [r.code for r in send(lmtp, [ALICE])] == [250]
    (reply,) = sink.wait(1)
    assert reply["rcpt_tos"] == ["carol@remote.example"] and b"Subject: Away (JMAP)" in reply["data"]
    assert placed(services, ALICE) == [(["Archive"], [])]
