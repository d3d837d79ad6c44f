"""A cluster as it runs in production: ``serve`` nodes on one Postgres database and one RabbitMQ, and what a
client does with it (LMTP deliveries, JMAP over HTTP, WebSocket push), for tests/deploy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.jmap import basic_auth
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ServeProcess, start_serve
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE, PASSWORD = "alice@example.org", "alice-password-1"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


class Cluster:
    """Nodes of one database and broker (each started with ``env`` too); each node's stderr is its log."""

    def __init__(self, database_url: str, broker_url: str, tmp_path: Path, **env: str) -> None:
        self.database_url, self.broker_url, self.tmp_path = database_url, broker_url, tmp_path
        self.env = env
        self.nodes: list[ServeProcess] = []
        self.sent = 0

    def node(self, lmtp: bool = False) -> ServeProcess:
        """A new node, once its buses are connected to the broker (sockets opened then miss nothing)."""
        node = start_serve(self.database_url, self.tmp_path, lmtp=lmtp, BROKER_URL=self.broker_url, **self.env)
        self.nodes.append(node)
        connected = lambda bus: f"event=bus_connected bus={bus} " in node.stderr()  # noqa: E731
        wait_until(lambda: connected("mailbox") and connected("jmap"), 30, message="the buses connected")
        return node

    def offer(self, node: ServeProcess) -> tuple[int, str]:
        """Offer one new message for alice over ``node``'s LMTP: (the first reply that is not 250, else 250;
        the message's subject)."""
        assert node.lmtp_port is not None
        self.sent += 1
        subject = f"number {self.sent}"
        message = f"From: bob@example.org\r\nSubject: {subject}\r\n\r\nHi.\r\n".encode()
        with LMTPClient("127.0.0.1", node.lmtp_port, timeout=60) as lmtp:
            assert lmtp.lhlo().code == 250
            rcpt, data = lmtp.transaction("bob@example.org", [ALICE], message)
        codes = [r.code for r in rcpt + data]
        return next((code for code in codes if code != 250), 250), subject

    def deliver(self, node: ServeProcess) -> str:
        """One message for alice over ``node``'s LMTP, which must answer 250; its subject."""
        code, subject = self.offer(node)
        assert code == 250, f"LMTP answered {code} for {subject!r}"
        return subject

    def stop(self) -> list[str]:
        for node in self.nodes:
            node.stop()
        return [node.stderr() for node in self.nodes]


def email_state(message: dict) -> str | None:
    """The Email state a StateChange carries (alice's only account), if any."""
    for types in message.get("changed", {}).values():
        if "Email" in types:
            return types["Email"]
    return None


def connect(node: ServeProcess, push_state: str | None = None) -> WsClient:
    """A WebSocket client of alice on ``node`` with Email push enabled (from ``push_state`` if given)."""
    client = WsClient(node.http_port, basic(ALICE, PASSWORD), timeout=60)
    client.enable_push(["Email"], push_state=push_state)
    return client


def http(node: ServeProcess, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, dict, Any]:
    """One HTTP request as alice: (status, headers in lower case, the JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**basic_auth(ALICE, PASSWORD), "Content-Type": "application/json"}
    request = urllib.request.Request(node.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, found = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, raw, found = e.code, e.read(), e.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return status, {k.lower(): v for k, v in found.items()}, parsed


def account_id(node: ServeProcess) -> str:
    """Alice's account id, read from ``node``'s Session once (later calls work while the database is away)."""
    key = f"{node.url} {node.proc.pid}"
    known = _accounts.get(key)
    if known is None:
        status, _, session = http(node, "GET", "/jmap/session")
        assert status == 200, session
        known = _accounts[key] = str(session["primaryAccounts"]["urn:ietf:params:jmap:mail"])
    return known


_accounts: dict[str, str] = {}


def api(node: ServeProcess, method: str, args: dict, timeout: float = 60) -> tuple[int, dict, Any]:
    """One JMAP method call over POST /jmap/api: (HTTP status, headers, the call's arguments or the body)."""
    args = {"accountId": account_id(node), **args}
    status, headers, body = http(node, "POST", "/jmap/api", {"using": USING, "methodCalls": [[method, args, "c"]]})
    if status != 200:
        return status, headers, body
    name, result, _ = body["methodResponses"][0]
    assert name == method, result
    return status, headers, result


def call(node: ServeProcess, method: str, args: dict) -> dict:
    """One JMAP method call that must succeed; its arguments."""
    status, _, result = api(node, method, args)
    assert status == 200, result
    return result


def current_email_state(node: ServeProcess) -> str:
    return str(call(node, "Email/get", {"ids": []})["state"])


def subjects_created_since(node: ServeProcess, state: str) -> set[str]:
    """The subjects of every Email created since ``state`` (Email/changes, paged to the end)."""
    created: list[str] = []
    while True:
        changes = call(node, "Email/changes", {"sinceState": state})
        created += changes["created"]
        state = changes["newState"]
        if not changes["hasMoreChanges"]:
            break
    if not created:
        return set()
    emails = call(node, "Email/get", {"ids": created, "properties": ["subject"]})["list"]
    return {email["subject"] for email in emails}
