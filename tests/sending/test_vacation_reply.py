"""The vacation auto-reply (RFC 3834) on delivery: sent through a REAL SMTP server (aiosmtpd, its own process)
or delivered locally, once per sender per period, never to lists, bulk or automatic mail."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from jmapmono.mailbox.mime_tree import parse_mime
from jmapmono.sending.vacation import VacationSettings, build_reply, skip_reason
from tests.support.servers import ROOT

ME = "alice@example.org"


@pytest.fixture
def config(config, sink):
    sink.clear()
    return config.with_overrides(smtp_relay=sink.address)


_n = [0]


def message(sender="carol@remote.example", to=ME, extra="", subject="Lunch?", return_path=True):
    _n[0] += 1
    head = f"Return-Path: <{sender}>\r\n" if return_path else ""
    return (
        f"{head}From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{_n[0]}@remote.example>\r\nReferences: <m0@remote.example>\r\n{extra}\r\nHello!\r\n"
    ).encode()


def enable(client, **fields):
    client.call("VacationResponse/set", update={"singleton": {"isEnabled": True, **fields}})


def deliver(services, raw, to=ME):
    services.mailboxes.deliver(to, raw)
    assert services.vacation.wait_idle(10)  # the reply runs in the background: wait for it to be done


def headers(raw: bytes):
    return parse_mime(raw).root


# --- when not to answer (RFC 3834 §2) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, reason",
    [
        (message(), None),
        (message(extra="Auto-Submitted: no\r\n"), None),
        (message(extra="Auto-Submitted: No (a comment)\r\n"), None),
        (message(to=f"Someone <other@example.org>, {ME.upper()}"), None),
        (message(to="other@example.org", extra=f"Cc: {ME}\r\n"), None),
        (message(to="undisclosed-recipients:;", extra=f"Resent-To: {ME}\r\n"), None),
        (message(extra="Auto-Submitted: auto-generated\r\n"), "auto-submitted"),
        (message(extra="Auto-Submitted: auto-replied\r\n"), "auto-submitted"),
        (message(extra="Precedence: bulk\r\n"), "precedence-bulk"),
        (message(extra="Precedence: JUNK\r\n"), "precedence-junk"),
        (message(extra="Precedence: list\r\n"), "precedence-list"),
        (message(extra="List-Id: <dev.lists.example>\r\n"), "mailing-list"),
        (message(extra="List-Unsubscribe: <mailto:leave@lists.example>\r\n"), "mailing-list"),
        (message(extra="X-Auto-Response-Suppress: DR, OOF\r\n"), "suppressed"),
        (message(sender=""), "null-sender"),
        (message(sender="MAILER-DAEMON@remote.example"), "robot-sender"),
        (message(sender="owner-dev@lists.example"), "robot-sender"),
        (message(sender="dev-request@lists.example"), "robot-sender"),
        (message(sender="noreply@shop.example"), "robot-sender"),
        (message(sender=ME), "own-address"),
        (message(to="other@example.org"), "not-addressed"),
        (message(return_path=False, to="other@example.org", extra=f"Bcc: {ME}\r\n"), None),
        (message(sender="not an address"), "invalid-sender"),
    ],
)
def test_when_not_to_answer(raw, reason):
    assert skip_reason(headers(raw), {ME}) == reason


def test_dates():
    at = int(datetime(2024, 7, 10, tzinfo=UTC).timestamp() * 1000)
    assert VacationSettings(is_enabled=True).active_at(at)
    assert not VacationSettings(is_enabled=False).active_at(at)
    assert VacationSettings(is_enabled=True, from_date=at, to_date=at + 1).active_at(at)  # fromDate included
    assert not VacationSettings(is_enabled=True, to_date=at).active_at(at)  # toDate excluded
    assert not VacationSettings(is_enabled=True, from_date=at + 1).active_at(at)


def test_reply_headers_and_bodies():
    when = datetime(2024, 7, 10, 8, 0, tzinfo=UTC)
    raw = build_reply(VacationSettings(True), headers(message()), "Alice", ME, "carol@remote.example", when)
    reply = message_from_bytes(raw, policy=policy.default)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"] == "Re: Lunch?" and reply["To"] == "carol@remote.example"
    assert reply["From"] == "Alice <alice@example.org>" and reply["Message-ID"].endswith("@example.org>")
    assert reply["In-Reply-To"] == f"<m{_n[0]}@remote.example>"
    assert reply["References"] == f"<m0@remote.example> <m{_n[0]}@remote.example>"
    assert reply.get_content_type() == "text/plain" and "away" in reply.get_content()
    html_only = VacationSettings(True, subject="Out\r\nof office", html_body="<p>On <b>leave</b></p>")
    raw = build_reply(html_only, headers(message(subject="Re: x")), "", ME, "c@r.example", when)
    reply = message_from_bytes(raw, policy=policy.default)
    assert reply["Subject"] == "Out of office" and reply["From"] == ME
    assert reply.get_content_type() == "multipart/alternative"
    text, html = reply.get_payload()
    assert "On leave" in text.get_content() and "<b>leave</b>" in html.get_content()
    assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")


# --- end to end ---------------------------------------------------------------------------------------------------


def test_answered_once_per_sender_per_period(alice, services, sink):
    enable(alice, subject="Away", textBody="Back on Monday.")
    deliver(services, message())
    [reply] = sink.wait(1)
    assert reply["mail_from"] == "<>" and reply["rcpt_tos"] == ["carol@remote.example"]
    parsed = message_from_bytes(reply["data"], policy=policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied" and parsed["Subject"] == "Away"
    assert parsed["In-Reply-To"] == f"<m{_n[0]}@remote.example>"
    assert parsed.get_content().strip() == "Back on Monday."
    deliver(services, message())  # the same sender again: not answered again
    deliver(services, message(sender="CAROL@remote.example"))
    assert len(sink.messages()) == 1
    deliver(services, message(sender="dave@remote.example"))  # another sender is
    assert [m["rcpt_tos"] for m in sink.wait(2)] == [["carol@remote.example"], ["dave@remote.example"]]
    with services.db.transaction() as tx:  # the period is over for carol
        tx.execute(
            "UPDATE vacation_replies SET replied_at = replied_at - ? WHERE sender = ?",
            (8 * 86_400_000, "carol@remote.example"),
        )
    deliver(services, message())
    assert len(sink.wait(3)) == 3


def test_a_changed_response_answers_everyone_again(alice, services, sink):
    enable(alice)
    deliver(services, message())
    sink.wait(1)
    alice.call("VacationResponse/set", update={"singleton": {"textBody": "Now back next week."}})
    deliver(services, message())
    assert b"next week" in sink.wait(2)[1]["data"]


def test_nothing_sent_when_disabled_out_of_dates_or_not_personal(alice, services, sink):
    deliver(services, message())  # never enabled
    enable(alice, fromDate="2999-01-01T00:00:00Z")
    deliver(services, message())
    enable(alice, fromDate=None, toDate="2000-01-01T00:00:00Z")
    deliver(services, message())
    enable(alice, toDate=None)
    deliver(services, message(extra="List-Id: <dev.lists.example>\r\n"))
    deliver(services, message(extra="Precedence: bulk\r\n"))
    deliver(services, message(extra="Auto-Submitted: auto-generated\r\n"))
    deliver(services, message(to="someone@example.org"))
    deliver(services, message(sender=""))
    assert sink.messages() == []
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM vacation_replies") == 0


def test_refused_reply_is_tried_again_next_time(alice, services, sink):
    enable(alice)
    deliver(services, message(sender="reject@remote.example"))
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM vacation_replies") == 0  # the claim was released
    assert sink.messages() == []


def test_local_sender_gets_the_reply_locally_and_replies_do_not_loop(alice, bob, services, sink):
    enable(alice, subject="Alice is away")
    enable(bob, subject="Bob is away")
    deliver(services, message(sender="bob@example.org"))
    assert services.vacation.wait_idle(10)
    inbox = {mb.role: mb.id for mb in services.mailboxes.get_mailboxes(bob.account_id)[0]}["inbox"]
    ids = bob.call("Email/query", filter={"inMailbox": inbox})["ids"]
    [reply] = bob.call("Email/get", ids=ids, properties=["subject", "from", "blobId"])["list"]
    assert reply["subject"] == "Alice is away" and reply["from"] == [{"name": None, "email": ME}]
    mine = alice.call("Email/query", filter={})["ids"]
    assert len(mine) == 1  # bob's vacation did not answer alice's automatic reply
    assert sink.messages() == []


def test_delivery_by_the_deliver_agent_replies_from_its_own_process(alice, services, sink, config):
    enable(alice)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=config.database_url, JMAPMONO_SMTP_RELAY=sink.address, JMAPMONO_LOG_LEVEL="INFO")
    result = subprocess.run(
        [sys.executable, "-m", "jmapmono", "deliver", "--to", ME],
        input=message(sender="zoe@remote.example"),
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    [reply] = sink.wait(1)  # sent before the process exited
    assert reply["rcpt_tos"] == ["zoe@remote.example"]
