"""A real ``serve`` (SQLite, its LMTP child) with a first user, and a headless Chromium on its page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ServeProcess, start_serve
from tests.support.waiting import wait_until
from tests.web.inbox.browser import Page, chromium

EMAIL = "alice@example.org"


@dataclass
class Box:
    """The server, its first user and what a test does to it from outside the browser."""

    server: ServeProcess
    email: str
    password: str

    def deliver(self, raw: bytes, sender: str = "ann@example.org") -> None:
        """Over the server's LMTP port (its LMTP process), as an MTA would; asserts 250."""
        assert self.server.lmtp_port is not None
        with LMTPClient("127.0.0.1", self.server.lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            _, data = lmtp.transaction(sender, [self.email], raw)
            assert [r.code for r in data] == [250], data
            lmtp.quit()

    @property
    def account_id(self) -> str:
        session = requests.get(f"{self.server.url}/jmap/session", auth=(self.email, self.password), timeout=10)
        assert session.status_code == 200, session.text
        return session.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"]

    def jmap(self, *calls: list) -> list:
        """Method calls on the user's account with the account password (not the browser's app password)."""
        account = self.account_id
        calls = tuple([name, {"accountId": account, **args}, tag] for name, args, tag in calls)
        using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
        response = requests.post(
            f"{self.server.url}/jmap/api",
            json={"using": using, "methodCalls": list(calls)},
            auth=(self.email, self.password),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["methodResponses"]

    def app_passwords(self) -> list[dict]:
        response = requests.get(f"{self.server.url}/jmap/app-passwords", auth=(self.email, self.password), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["appPasswords"]


def mail(subject: str, body: str = "Hello.", html: str | None = None, msgid: str | None = None) -> bytes:
    head = f"From: Ann Example <ann@example.org>\r\nTo: {EMAIL}\r\nSubject: {subject}\r\n"
    head += f"Message-ID: <{msgid or re.sub(r'[^a-z0-9]', '', subject.lower())}@example.org>\r\n"
    if html is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
    return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    server = start_serve(f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}", tmp_path, JMAPMONO_FIRST_USER=EMAIL)
    try:
        printed = wait_until(
            lambda: re.search(r"email: +(\S+)\s+password: +(\S+)", server.stdout()), 20, message="the first user"
        )
        box = Box(server, printed[1], printed[2])
        yield box
        server = box.server  # a test may have restarted it
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Started before the server, so that a machine without Chromium skips at once."""
    driver = chromium(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, box: Box) -> Page:
    return Page(browser, box.server.url)
