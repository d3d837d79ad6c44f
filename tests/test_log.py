"""Logging: one event is one line, whatever a client puts in the values logged (a user name with CR/LF would
otherwise forge a second, believable event); checked on a real ``serve`` process's stderr."""

from __future__ import annotations

import base64
import logging
import re
import sys

import requests

from jmapmono.log import kv
from tests.support.servers import start_serve
from tests.support.waiting import wait_until

FORGED = "mallory\r2026-01-01 00.00.00,000 INFO jmapmono.accounts.authn event=login user=ceo@bank.example"
_EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ ")


def test_kv_escapes_control_characters_and_quotes():
    assert kv(event="x", user="a@b.c", n=3, none=None) == "event=x user=a@b.c n=3 none=-"
    assert kv(user="a\rb") == 'user="a\\rb"'
    assert kv(user="a\nb\x00c\x1bd\u2028e") == 'user="a\\nb\\x00c\\x1bd\\u2028e"'
    assert kv(user='say "hi"', path="C:\\x") == 'user="say \\"hi\\"" path="C:\\\\x"'
    assert kv(empty="") == 'empty=""'


def test_the_formatter_keeps_a_message_and_its_traceback_on_one_line():
    from jmapmono.log import OneLineFormatter

    formatter = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "event=user_created user=%s", (FORGED,), None)
    assert formatter.format(record).count("\n") == 0 and "\r" not in formatter.format(record)
    try:
        raise ValueError("bad\r\nthing")
    except ValueError:
        failed = logging.LogRecord("t", logging.ERROR, __file__, 1, "event=failed", (), sys.exc_info())
    text = formatter.format(failed)
    assert "\n" not in text and "Traceback (most recent call last):\\n" in text and "bad\\r\\nthing" in text


def test_the_process_line_is_the_standard_formatters_text_escaped():
    from jmapmono.log import LINE_FORMAT, OneLineFormatter

    standard, ours = logging.Formatter(LINE_FORMAT), OneLineFormatter(LINE_FORMAT)
    for created in (1_800_000_000.0071, 1_800_000_000.9999, 1_800_000_001.5):  # the date is kept per second
        record = logging.LogRecord("jmapmono.api", logging.INFO, __file__, 1, "event=api user=%s", ("a",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
    forged = logging.LogRecord("t", logging.WARNING, __file__, 1, "event=x user=%s", (FORGED,), None)
    line = ours.format(forged)
    assert "\r" not in line and "\n" not in line and "user=mallory\\r2026-01-01" in line


def test_a_user_name_with_a_cr_cannot_forge_a_log_line(services, config, tmp_path):
    services.accounts.create_user("alice@example.org")  # not a first start: no user is created and logged
    server = start_serve(config.database_url, tmp_path, lmtp=False)
    try:
        credentials = base64.b64encode(f"{FORGED}:wrong".encode()).decode()
        answer = requests.get(
            f"{server.url}/.well-known/jmap", headers={"Authorization": f"Basic {credentials}"}, timeout=10
        )
        assert answer.status_code == 401
        wait_until(lambda: "event=login_failed" in server.stderr(), 15, message="the failed login logged")
    finally:
        server.stop()
    raw = server.err_path.read_bytes()
    assert b"\r" not in raw
    mentions = [line for line in raw.decode().splitlines() if "ceo@bank.example" in line]
    assert len(mentions) == 1 and "event=login_failed" in mentions[0], mentions
    assert all(_EVENT_LINE.match(line) for line in raw.decode().splitlines() if line), raw.decode()
