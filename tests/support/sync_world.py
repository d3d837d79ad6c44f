"""A fresh server for each hypothesis example, on SQLite or Postgres, and the test messages it receives.

Hypothesis runs many examples inside one pytest test, so function-scoped fixtures cannot isolate them:
:func:`world_factory` gives a callable that builds, per example, a new database (a copy of a migrated
SQLite file, or the test's Postgres database emptied), Runtime, Flask app and user.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jmapmono.config import load_config
from jmapmono.store import open_database
from jmapmono.store.migrations import migrate
from tests.conftest import _truncate_all
from tests.support.jmap import PASSWORD, JmapClient


class World:
    """One example's server: its own database, Runtime, Flask app, and a user with a JMAP client."""

    def __init__(self, env: dict[str, str], email: str, sqlite_file: Path | None = None) -> None:
        from jmapmono.runtime import Runtime
        from jmapmono.web.app import create_app

        self.sqlite_file = sqlite_file
        self.services = Runtime(load_config(env), open_database(env["DATABASE_URL"]))
        app = create_app(self.services)
        user, _ = self.services.accounts.create_user(email, PASSWORD)
        self.client = JmapClient(app.test_client(), user.email, user.account_id)

    def close(self) -> None:
        self.services.close()
        if self.sqlite_file is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.sqlite_file}{suffix}").unlink(missing_ok=True)


def _env(url: str, data_dir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "JMAPMONO_DATA_DIR": str(data_dir),
        "BROKER_URL": "memory://localhost/",
        "JMAPMONO_LMTP_LISTEN": "off",
        "JMAPMONO_LOG_LEVEL": "WARNING",
    }


def world_factory(backend: str, database_url: str, tmp_path: Path, email: str) -> Callable[[], World]:
    """Fresh servers for ``backend``; ``database_url`` is the test's (the ``database_url`` fixture)."""
    if backend == "sqlite":
        template = tmp_path / "template.sqlite3"
        db = open_database(f"sqlite:///{template}")
        migrate(db)  # once: migrating takes ~0.25 s, copying the migrated file a few ms
        db.close()
        counter = iter(range(1_000_000))

        def fresh() -> World:
            path = tmp_path / f"example{next(counter)}.sqlite3"
            shutil.copy(template, path)
            return World(_env(f"sqlite:///{path}", tmp_path / "data"), email, path)

        return fresh

    def emptied() -> World:
        db = open_database(database_url)
        _truncate_all(db)
        db.close()
        return World(_env(database_url, tmp_path / "data"), email)

    return emptied


def raw_message(message_id: str, subject: str, parents: list[str], to: str = "alice@example.org") -> bytes:
    """A small message with this Message-ID and subject, replying to ``parents`` (Message-IDs, oldest first)."""
    lines = [
        "From: Bob <bob@example.org>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id}>",
        "Date: Tue, 01 Sep 2020 09:58:00 +0200",
    ]
    if parents:
        lines += [f"In-Reply-To: <{parents[-1]}>", "References: " + " ".join(f"<{p}>" for p in parents)]
    return ("\r\n".join(lines) + f"\r\n\r\nbody of {message_id}\r\n").encode()


def draft(mailbox_id: str, message_id: str, subject: str, parents: list[str], seen: bool = False) -> dict[str, Any]:
    """An Email/set create object: a plain-text draft in ``mailbox_id``, replying to ``parents``."""
    obj: dict[str, Any] = {
        "mailboxIds": {mailbox_id: True},
        "keywords": {"$draft": True, **({"$seen": True} if seen else {})},
        "from": [{"email": "alice@example.org"}],
        "to": [{"email": "bob@example.org"}],
        "subject": subject,
        "messageId": [message_id],
        "bodyStructure": {"type": "text/plain", "partId": "1"},
        "bodyValues": {"1": {"value": f"draft {message_id}\n"}},
    }
    if parents:
        obj["inReplyTo"] = obj["references"] = parents
    return obj


def pick(items: list, index: int) -> Any:
    """The item a drawn index stands for (indexes wrap around, so any draw names an item)."""
    return items[index % len(items)]


class AccountDriver:
    """Drives one account through the JMAP API for a state machine (mixed into it).

    Remembers every email and mailbox it created in creation order, so that the choices of an example
    never depend on ids (random) and replay the same; reads the live mailboxes and emails in the same
    request as each write.
    """

    world: World
    client: JmapClient

    def drive(self, world: World) -> None:
        self.world, self.client = world, world.client
        #: The mailboxes and live email ids last read; None once something may have changed them.
        self.seen: tuple[list[dict[str, Any]], set[str]] | None = None
        self.n = 0
        #: Every email id ever created here, in creation order.
        self.emails: list[str] = []
        #: Email id -> (its Message-ID, its base subject): what a reply to it needs.
        self.threading: dict[str, tuple[str, str]] = {}
        mailboxes = self.client.call("Mailbox/get", {"ids": None, "properties": ["role"]})["list"]
        self.mailboxes: list[str] = [m["id"] for m in sorted(mailboxes, key=lambda m: m["role"])]

    def _look_calls(self) -> list[list[Any]]:
        """The calls that read what the next choices are made from: the mailboxes and the live emails."""
        account = self.client.account_id
        return [["Mailbox/get", {"accountId": account, "ids": None}, "m"], ["Email/query", {"accountId": account}, "q"]]

    def _saw(self, responses: list[list[Any]]) -> None:
        by_id = {call_id: args for _, args, call_id in responses}
        self.seen = (by_id["m"]["list"], set(by_id["q"]["ids"]))

    def _live_mailboxes(self) -> list[dict[str, Any]]:
        if self.seen is None:
            self._saw(self.client.responses(self._look_calls()))
        found = {m["id"]: m for m in self.seen[0]}
        assert set(found) <= set(self.mailboxes), "a mailbox appeared that no step created"
        return [found[i] for i in self.mailboxes if i in found]

    def _live_emails(self) -> list[str]:
        if self.seen is None:
            self._saw(self.client.responses(self._look_calls()))
        return [e for e in self.emails if e in self.seen[1]]

    def _role(self, role: str) -> str | None:
        return next((m["id"] for m in self._live_mailboxes() if m["role"] == role), None)

    def _targets(self, picks: list[int]) -> list[str]:
        live = self._live_emails()
        return list(dict.fromkeys(pick(live, p) for p in picks)) if live else []

    def _new_message(self, reply: int | None) -> tuple[str, str, list[str]]:
        """A fresh Message-ID, a subject and the ids it replies to (a known email's, live or not)."""
        self.n += 1
        message_id = f"m{self.n}@sync.test"
        if reply is not None and self.threading:
            parent_id, base = pick(list(self.threading.values()), reply)
            return message_id, f"Re: {base}", [parent_id]
        return message_id, f"Topic {self.n}", []

    def _learn(self, email_id: str, message_id: str, subject: str) -> None:
        self.emails.append(email_id)
        self.threading[email_id] = (message_id, subject.removeprefix("Re: "))

    def _set(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """A /set call (or Email/import) whose newState must at once be the state Foo/get reports."""
        account = self.client.account_id
        type = method.split("/")[0]
        responses = self.client.responses(
            [
                [method, {"accountId": account, **args}, "s"],
                [f"{type}/get", {"accountId": account, "ids": []}, "g"],
                *self._look_calls(),
            ]
        )
        (name, result, _), (_, got, _) = responses[:2]
        assert name != "error", result
        assert result["newState"] == got["state"], (result, got)
        self._saw(responses)
        return result

    def _deliver_one(self, reply: int | None, mailbox_name: str | None) -> None:
        message_id, subject, parents = self._new_message(reply)
        raw = raw_message(message_id, subject, parents)
        delivered = self.world.services.mailboxes.deliver(self.client.email, raw, mailbox_name)
        self.seen = None
        self._learn(delivered.message_id, message_id, subject)
