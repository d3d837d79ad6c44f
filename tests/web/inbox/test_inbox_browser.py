"""The web inbox in Debian's Chromium against a real ``serve``: log in, read, flag, move, search, send to
oneself, see mail delivered over LMTP appear without a reload, log out (the app password is gone).
Screenshots at desktop and phone width go to the test's tmp dir (and to docs/img/ with
JMAPMONO_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from selenium.webdriver.common.keys import Keys

from tests.support.servers import ROOT, jmapmono_env, start_serve
from tests.web.inbox.browser import DESKTOP, PHONE, Page
from tests.web.inbox.conftest import Box, mail

#: The README's screenshots are refreshed only when asked (``JMAPMONO_UPDATE_SCREENSHOTS=1``): a test run
#: leaves the checkout as it found it; the test's own copies stay in its tmp dir.
IMG = ROOT / "docs" / "img" if os.environ.get("JMAPMONO_UPDATE_SCREENSHOTS") else None


def flagged(box: Box, subject: str) -> dict:
    (_, query, _), (_, got, _) = box.jmap(
        ["Email/query", {"filter": {"subject": subject}}, "q"],
        [
            "Email/get",
            {
                "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": ["keywords", "mailboxIds"],
            },
            "g",
        ],
    )
    return got["list"][0]


def test_log_in_read_flag_move_search_send_and_log_out(box: Box, page: Page, tmp_path: Path):
    box.deliver(mail("Quarterly report", "The numbers are in.\nSee you."))
    box.deliver(mail("Lunch on Friday", "Pizza?", html="<p>Shall we have <b>pizza</b>?</p>"))
    box.deliver(mail("Holiday photos", "Beach."))
    page.log_in(box.email, box.password)
    page.wait_live()
    page.wait(lambda: page.subjects() == ["Holiday photos", "Lunch on Friday", "Quarterly report"], "newest first")
    assert all(r["unread"] for r in page.rows())
    assert page.driver.title.startswith("(3) Inbox")
    page.screenshot(tmp_path / "inbox-desktop.png", IMG and IMG / "inbox-desktop.png")

    # Read: the HTML one in its frame, the plain one as text; both are marked read, the title follows.
    frame = page.frame(page.open_row("Lunch on Friday"))
    assert frame["sandbox"] == "allow-popups allow-popups-to-escape-sandbox"
    assert "<b>pizza</b>" in frame["srcdoc"]
    page.screenshot(tmp_path / "message-desktop.png", IMG and IMG / "message-desktop.png")
    page.open_row("Quarterly report")
    text = page.wait(lambda: page.js("return document.querySelector('#reader-body pre')?.textContent"), "the text")
    assert text.strip() == "The numbers are in.\nSee you."
    page.wait(lambda: page.driver.title.startswith("(1) Inbox"), "the unread count in the title")

    # Flag by keyboard, then move with the menu: the server has both.
    page.by_css("#message-list")[0].send_keys("s")
    page.wait(lambda: page.wait_row("Quarterly report")["flagged"], "the row flagged")
    page.wait(lambda: "$flagged" in flagged(box, "Quarterly report")["keywords"], "the flag on the server")
    archive = next(r[1] for r in box.jmap(["Mailbox/query", {"filter": {"role": "archive"}}, "m"]))["ids"][0]
    page.move_to("Archive")
    page.wait(lambda: "Quarterly report" not in page.subjects(), "the row gone from the inbox")
    page.wait(lambda: flagged(box, "Quarterly report")["mailboxIds"] == {archive: True}, "the move on the server")
    page.open_mailbox("Archive")
    page.wait_row("Quarterly report")

    # Search the whole account with the server's text filter.
    search = page.by_css("#search")[0]
    search.send_keys("pizza", Keys.ENTER)
    page.wait(lambda: page.subjects() == ["Lunch on Friday"], "the search result")

    # Send one to oneself: it arrives in the inbox, live.
    page.open_mailbox("Inbox")
    page.by_css("#message-list")[0].send_keys("c")
    page.wait(lambda: page.js("return document.getElementById('compose').open"), "the composer")
    page.by_css("#c-to")[0].send_keys(box.email)
    page.by_css("#c-subject")[0].send_keys("Note to self")
    page.by_css("#c-body")[0].send_keys("Remember the milk.")
    page.by_css("#c-send")[0].click()
    page.wait(lambda: not page.js("return document.getElementById('compose').open"), "the composer closed")
    page.wait_row("Note to self")
    page.open_mailbox("Sent")
    page.wait_row("Note to self")

    # Phone width: one pane at a time.
    page.open_mailbox("Inbox")
    page.driver.set_window_size(*PHONE)
    page.wait(lambda: page.js("return getComputedStyle(document.getElementById('toast')).opacity") == "0", "no toast")
    page.screenshot(tmp_path / "inbox-phone.png", IMG and IMG / "inbox-phone.png")
    page.open_row("Holiday photos")
    assert not page.visible("list-pane") or not page.js("return document.getElementById('list-pane').offsetParent")
    page.screenshot(tmp_path / "message-phone.png", IMG and IMG / "message-phone.png")
    page.by_css("#back")[0].click()
    page.driver.set_window_size(*DESKTOP)

    # Log out: the browser's app password is revoked, and the page holds no credential any more.
    assert [p["label"] for p in box.app_passwords()] == ["Web inbox (Chromium on Linux)"]
    page.by_css("#logout")[0].click()
    page.wait(lambda: page.visible("login"), "the login form")
    assert box.app_passwords() == []
    assert page.js("return sessionStorage.length") == 0


def test_wrong_password_and_throttling_are_said_in_words(box: Box, page: Page):
    page.log_in(box.email, "not the password")
    page.wait(lambda: page.js("return document.getElementById('login-error').textContent"), "an error")
    assert page.js("return document.getElementById('login-error').textContent") == "Wrong email or password."
    for _ in range(12):
        page.by_css("#login-submit")[0].click()
        page.wait(lambda: not page.by_css("#login-submit")[0].get_attribute("disabled"), "the answer")
        text = page.js("return document.getElementById('login-error').textContent")
        if text.startswith("Too many failed logins"):
            break
    assert text.startswith("Too many failed logins from here. Try again in ") and text.endswith(" seconds."), text
    assert page.visible("login") and not page.visible("app")


def test_a_delivery_over_lmtp_appears_in_the_open_list_without_a_reload(box: Box, page: Page):
    box.deliver(mail("Already here"))
    page.log_in(box.email, box.password)
    page.wait_live()
    page.wait_row("Already here")
    page.js("window.__marker = 'no reload'")
    started = time.monotonic()
    box.deliver(mail("Fresh from LMTP", "Just arrived."))
    page.wait(lambda: page.subjects()[:1] == ["Fresh from LMTP"], "the delivery in the list")
    seen = time.monotonic() - started
    page.wait(lambda: page.driver.title.startswith("(2) Inbox"), "the unread count")
    count = page.js("return document.querySelector('#mailbox-list [aria-current=true] .count').textContent")
    assert count == "2"
    assert page.js("return window.__marker") == "no reload"
    print(f"\ndelivery (LMTP 250) to row visible in the browser: {seen * 1000:.0f} ms")

    # A change made elsewhere (another client) shows the same way.
    (_, query, _), *_ = box.jmap(["Email/query", {"filter": {"subject": "Already here"}}, "q"])
    box.jmap(["Email/set", {"update": {query["ids"][0]: {"keywords/$seen": True}}}, "s"])
    page.wait(lambda: not page.wait_row("Already here")["unread"], "the row read")
    page.wait(lambda: page.driver.title.startswith("(1) Inbox"), "the unread count down")


def test_the_page_reconnects_after_a_restart_and_shows_what_arrived_meanwhile(box: Box, page: Page, tmp_path: Path):
    """The server goes away (a restart): the page says so, reconnects with backoff by itself, resumes by
    pushState, and mail delivered while it was away appears in the open list, with no reload."""
    box.deliver(mail("Before the restart"))
    page.log_in(box.email, box.password)
    page.wait_live()
    page.wait_row("Before the restart")
    page.js("window.__marker = 'no reload'")
    port = box.server.http_port
    box.server.stop()
    page.wait(lambda: page.js("return document.getElementById('conn').dataset.status") != "live", "the page offline")
    box.server = start_serve(f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}", tmp_path, http_port=port)
    box.deliver(mail("While you were away"))
    page.wait_live()
    page.wait(lambda: page.subjects()[:1] == ["While you were away"], "the delivery made during the outage", 40)
    assert page.js("return window.__marker") == "no reload"


def test_the_quota_is_shown_and_follows_deliveries(box: Box, page: Page, tmp_path: Path):
    """RFC 9425 in the page: the account's limits under the mailboxes, the usage updated live by a delivery."""
    env = jmapmono_env(f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}", tmp_path / "data")
    argv = [sys.executable, "-m", "jmapmono", "user", "quota", box.email, "--storage", "2M", "--messages", "100"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    box.deliver(mail("Counted"))
    page.log_in(box.email, box.password)
    page.wait_live()
    quota = lambda: page.js("return document.getElementById('quota').textContent")  # noqa: E731
    page.wait(lambda: "of 2.0 MB" in quota() and "1 of 100 messages" in quota(), "the quota shown")
    box.deliver(mail("Counted too"))
    page.wait(lambda: "2 of 100 messages" in quota(), "the usage after a delivery")


def jmapmono_cli(tmp_path: Path, *args: str) -> str:
    env = jmapmono_env(f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}", tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "jmapmono", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_accounts_shared_with_the_user_show_their_mailboxes_and_mail_live(box: Box, page: Page, tmp_path: Path):
    """Every mail account of the Session (RFC 8620 §2: ``accounts``) is shown, the user's own first; a
    mailbox of another account opens that account's mail, and a delivery to it appears live."""
    jmapmono_cli(tmp_path, "user", "add", "bob@example.org", "--password", "bob's password")
    jmapmono_cli(tmp_path, "user", "delegate", "bob@example.org", box.email)
    bob = Box(box.server, "bob@example.org", "bob's password")
    bob.deliver(mail("For Bob"))
    box.deliver(mail("For Alice"))
    page.log_in(box.email, box.password)
    page.wait_live()
    page.wait_row("For Alice")
    groups = "return [...document.querySelectorAll('#mailbox-list .account-name')].map(e => e.textContent)"
    assert page.js(groups) == ["bob@example.org"]
    # The user's own Inbox comes first; the tab counts only the user's own unread mail.
    first = "return document.querySelector('#mailbox-list .mailbox').dataset.account"
    assert page.js(first) == box.account_id
    assert page.driver.title.startswith("(1) Inbox")

    # Bob's Inbox: his roles come first too.
    opened = "const b = document.querySelector(`#mailbox-list .account .mailbox`); b && b.click(); return !!b"
    page.wait(lambda: page.js(opened), "a click on Bob's Inbox")
    page.wait(lambda: page.subjects() == ["For Bob"], "Bob's mail in the list")
    page.open_row("For Bob")
    page.wait(lambda: not page.wait_row("For Bob")["unread"], "Bob's message read")
    bob.deliver(mail("Also for Bob"))
    page.wait(lambda: page.subjects()[:1] == ["Also for Bob"], "a delivery to Bob's Inbox, live")
    count = "return document.querySelector('#mailbox-list .account .mailbox .count')?.textContent"
    page.wait(lambda: page.js(count) == "1", "Bob's unread count")
    assert page.driver.title.startswith("(1) Inbox")  # still the user's own count


def test_a_mailbox_shared_with_the_user_shows_and_goes_when_the_share_is_taken_back(
    box: Box, page: Page, tmp_path: Path
):
    """A single mailbox shared with rights (draft-ietf-jmap-mail-sharing: ``shareWith``): the owner's account
    appears with that mailbox only; taking the share back removes it from the open page, which falls back to
    the user's own Inbox (RFC 8620 §2: the Session's ``accounts`` changed, so its ``state`` did)."""
    jmapmono_cli(tmp_path, "user", "add", "bob@example.org", "--password", "bob's password")
    bob = Box(box.server, "bob@example.org", "bob's password")
    bob.deliver(mail("Bob's secret"))
    bob.jmap(["Mailbox/set", {"create": {"p": {"name": "Projects"}}}, "m"])
    jmapmono_cli(tmp_path, "mailbox", "share", "bob@example.org", "Projects", box.email, "--rights", "read,seen")
    box.deliver(mail("For Alice"))
    page.log_in(box.email, box.password)
    page.wait_live()
    page.wait_row("For Alice")
    shared = "return [...document.querySelectorAll('#mailbox-list .account .mailbox .name')].map(e => e.textContent)"
    page.wait(lambda: page.js(shared) == ["Projects"], "only the shared mailbox of Bob's")
    page.js("document.querySelector('#mailbox-list .account .mailbox').click()")
    page.wait(lambda: page.js("return document.getElementById('list-title').textContent") == "Projects", "open")
    assert page.subjects() == []  # Bob's Inbox is not shared: its mail is not shown

    jmapmono_cli(tmp_path, "mailbox", "unshare", "bob@example.org", "Projects", box.email)
    page.wait(lambda: page.js(shared) == [], "Bob's account gone from the page")
    page.wait(lambda: page.subjects() == ["For Alice"], "back in the user's own Inbox")


def test_a_message_in_a_shared_mailbox_is_forwarded_with_its_attachment(box: Box, page: Page, tmp_path: Path):
    """The draft is written in the user's own account, so the attachment of a message in a shared one is
    first copied there (RFC 8620 §6.3, Blob/copy: "Binary data may be copied *between* two different
    accounts")."""
    jmapmono_cli(tmp_path, "user", "add", "bob@example.org", "--password", "bob's password")
    bob = Box(box.server, "bob@example.org", "bob's password")
    raw = (
        b"From: Ann Example <ann@example.org>\r\nTo: bob@example.org\r\nSubject: Plans attached\r\n"
        b"Message-ID: <plans@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the notes.\r\n"
        b"--b\r\nContent-Type: text/plain; name=notes.txt\r\n"
        b"Content-Disposition: attachment; filename=notes.txt\r\n\r\n"
        b"Step one.\r\n--b--\r\n"
    )
    bob.deliver(raw)
    (_, made, _), *_ = bob.jmap(["Mailbox/set", {"create": {"p": {"name": "Projects"}}}, "m"])
    projects = made["created"]["p"]["id"]
    (_, found, _), *_ = bob.jmap(["Email/query", {"filter": {"subject": "Plans attached"}}, "q"])
    bob.jmap(["Email/set", {"update": {found["ids"][0]: {"mailboxIds": {projects: True}}}}, "s"])
    jmapmono_cli(tmp_path, "mailbox", "share", "bob@example.org", "Projects", box.email, "--rights", "read")

    page.log_in(box.email, box.password)
    page.wait_live()
    record = (
        "window.__sent = []; const f = window.fetch;"
        " window.fetch = (u, o) => { if (o && typeof o.body === 'string') window.__sent.push(o.body); return f(u, o); }"
    )
    page.js(record)  # the page's API calls from here on
    page.wait(lambda: page.js("return !!document.querySelector('#mailbox-list .account .mailbox')"), "Bob's box")
    page.js("document.querySelector('#mailbox-list .account .mailbox').click()")
    page.open_row("Plans attached")
    page.js("document.querySelector('[data-act=forward]').click()")
    page.wait(lambda: "notes.txt" in page.js("return document.getElementById('c-attachments').textContent"), "attached")
    page.by_css("#c-to")[0].send_keys(box.email)
    page.by_css("#c-send")[0].click()
    page.wait(lambda: not page.js("return document.getElementById('compose').open"), "the composer closed")

    def arrived() -> list | None:
        (_, q, _), (_, got, _) = box.jmap(
            ["Email/query", {"filter": {"subject": "Fwd: Plans attached", "notKeyword": "$draft"}}, "q"],
            [
                "Email/get",
                {"#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["attachments"]},
                "g",
            ],
        )
        return [a["name"] for e in got["list"] for a in e["attachments"]] or None

    names = page.wait(arrived, "the forward, with its attachment, in the user's own account")
    assert set(names) == {"notes.txt"}  # the sent copy and the one delivered to the user
    # RFC 8621 §2 maySetSeen: a read-only share may not be marked read; the page did not try.
    assert not [body for body in page.js("return window.__sent") if "keywords/$seen" in body]
