"""Several serving processes on one SQLite database and the embedded memory:// bus: ``serve --workers 2``
and ``gunicorn -w 2`` beside an LMTP process. Push sockets of one user land on different workers; one
delivery must reach every one of them, and group work (web push) must happen once."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.push.test_webpush_delivery import subscribe
from tests.support.jmap import JmapClient
from tests.support.lmtp_client import LMTPClient
from tests.support.push_receiver import PushReceiver
from tests.support.servers import socket_owner, start_gunicorn, start_lmtp, start_serve
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE = "alice@example.org"
PASSWORD = "correct horse battery staple"
SOCKETS = 8


@pytest.fixture
def sqlite_only(config):
    if not config.is_sqlite:
        pytest.skip("the embedded default: SQLite (gunicorn covers Postgres with memory:// too)")


def message(n: int) -> bytes:
    return (
        f"From: carol@remote.example\r\nTo: {ALICE}\r\nSubject: number {n}\r\n"
        f"Message-ID: <n{n}@remote.example>\r\n\r\nhello\r\n"
    ).encode()


def deliver(lmtp_port: int, n: int) -> None:
    with LMTPClient("127.0.0.1", lmtp_port) as lmtp:
        assert lmtp.lhlo().code == 250
        _, data = lmtp.transaction("carol@remote.example", [ALICE], message(n))
        assert [r.code for r in data] == [250]


def account_of(url: str) -> str:
    session = requests.get(f"{url}/.well-known/jmap", headers={"Authorization": basic(ALICE, PASSWORD)}, timeout=10)
    return session.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"]


def sockets_on_every_worker(port: int, pids: list[int]) -> list[tuple[WsClient, int]]:
    """``SOCKETS`` push-enabled WebSockets of one user, at least one held by each of ``pids``."""
    held: list[tuple[WsClient, int]] = []
    extra: list[WsClient] = []
    for _ in range(200):
        client = WsClient(port, basic(ALICE, PASSWORD))
        owner = socket_owner(port, client.sock, pids)
        assert owner in pids, (owner, pids)
        owners = {o for _, o in held}
        missing = set(pids) - owners
        if len(held) < SOCKETS - len(missing) or owner in missing:
            client.enable_push(["Email", "Mailbox"])
            held.append((client, owner))
        else:
            extra.append(client)  # kept open, so that the next connection may go elsewhere
        if len(held) == SOCKETS and {o for _, o in held} == set(pids):
            break
    for client in extra:
        client.close()
    assert {o for _, o in held} == set(pids), "every worker holds a socket"
    return held


def assert_every_socket_pushed(held: list[tuple[WsClient, int]], account: str) -> None:
    for client, owner in held:
        change = client.push(where=lambda m: account in m.get("changed", {}), timeout=15)
        assert "Email" in change["changed"][account], (owner, change)


def test_serve_workers_push_a_delivery_to_every_socket_whichever_worker_holds_it(
    services, config, tmp_path, sqlite_only
):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_serve(config.database_url, tmp_path, workers=2)
    try:
        pids = server.worker_pids()
        assert len(pids) == 2
        account = account_of(server.url)
        held = sockets_on_every_worker(server.http_port, pids)
        assert server.lmtp_port is not None
        deliver(server.lmtp_port, 1)
        assert_every_socket_pushed(held, account)
        for client, _ in held:
            client.close()
    finally:
        code = server.stop()
    err = server.stderr()
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("event=serve_worker_stopped") == 2


def test_gunicorn_workers_push_a_delivery_of_the_lmtp_process_to_every_socket(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_gunicorn(config.database_url, config.data_dir, tmp_path, workers=2)
    lmtp = start_lmtp(config.database_url, tmp_path)
    try:
        wait_until(lambda: server.log().count("event=flow_started") == 2, timeout=30, message="both workers serving")
        pids = [int(p) for p in _booted_workers(server.log())]
        account = account_of(server.url)
        held = sockets_on_every_worker(server.port, pids)
        deliver(lmtp.port, 1)
        assert_every_socket_pushed(held, account)
        for client, _ in held:
            client.close()
    finally:
        lmtp.stop()
        server.stop()
    assert "Traceback" not in server.log()


def _booted_workers(log: str) -> list[str]:
    import re

    return re.findall(r"Booting worker with pid: (\d+)", log)


def test_a_killed_worker_is_restarted_and_its_clients_resume_by_push_state(services, config, tmp_path, sqlite_only):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_serve(config.database_url, tmp_path, workers=2)
    try:
        pids = server.worker_pids()
        account = account_of(server.url)
        held = sockets_on_every_worker(server.http_port, pids)
        assert server.lmtp_port is not None
        deliver(server.lmtp_port, 1)
        first = {id(c): c.push(where=lambda m: account in m.get("changed", {}), timeout=15) for c, _ in held}

        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        orphaned = [c for c, owner in held if owner == victim]
        for client in orphaned:
            assert client.wait_closed(timeout=15) == 1006  # the TCP connection died with the process
        wait_until(lambda: len(server.worker_pids()) == 3, timeout=30, message="the killed worker restarted")
        wait_until(
            lambda: server.stderr().count("event=serve_worker_started") == 3,
            timeout=30,
            message="the new worker serving",
        )
        deliver(server.lmtp_port, 2)  # while its clients are away

        for client in orphaned:
            again = WsClient(server.http_port, basic(ALICE, PASSWORD))
            again.enable_push(["Email", "Mailbox"], push_state=first[id(client)]["pushState"])
            caught_up = again.push(where=lambda m: account in m.get("changed", {}), timeout=15)
            before = first[id(client)]["changed"][account]["Email"]
            assert caught_up["changed"][account]["Email"] != before
            again.close()
        for client, owner in held:
            if owner != victim:
                client.close()
    finally:
        code = server.stop()
    assert code == 0, server.stderr()


def pending(services) -> int:
    with services.db.read() as tx:
        return int(tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL"))


class OverHttp:
    """What JmapClient posts with, over a real socket: ``post`` answering like a Flask test response."""

    class Response:
        def __init__(self, r: requests.Response) -> None:
            self.status_code = r.status_code
            self._r = r

        def get_data(self, as_text: bool = False) -> str | bytes:
            return self._r.text if as_text else self._r.content

        def get_json(self) -> object:
            return self._r.json()

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, data: str, headers: dict, content_type: str) -> OverHttp.Response:
        sent = dict(headers, **{"Content-Type": content_type})
        return self.Response(requests.post(self.url + path, data=data, headers=sent, timeout=10))


def test_serve_workers_send_one_web_push_per_change(services, config, tmp_path, sqlite_only):
    services.accounts.create_user(ALICE, PASSWORD)
    receiver = PushReceiver()
    server = start_serve(config.database_url, tmp_path, workers=2, JMAPMONO_PUSH_ALLOW_PRIVATE_TARGETS="1")
    try:
        account = account_of(server.url)
        client = JmapClient(OverHttp(server.url), ALICE, account, PASSWORD)
        subscribe(client, receiver, "/phone")
        assert server.lmtp_port is not None
        for n in range(1, 4):
            deliver(server.lmtp_port, n)
            receiver.wait("/phone", 1 + n, timeout=15)
        wait_until(lambda: pending(services) == 0, timeout=15, message="every outbox row published")
    finally:
        code = server.stop()
        receiver.stop()
    pushes = [r.json() for r in receiver.at("/phone")[1:]]
    emails = [p["changed"][account]["Email"] for p in pushes]
    assert len(emails) == 3 and len(set(emails)) == 3, pushes
    assert code == 0


def test_workers_default_to_the_cpus_and_refuse_nonsense():
    from jmapmono.config import ConfigError, load_config

    assert load_config({}).workers == (os.cpu_count() or 1)
    assert load_config({"JMAPMONO_WORKERS": "3"}).workers == 3
    for bad in ("0", "two"):
        with pytest.raises(ConfigError, match="JMAPMONO_WORKERS"):
            load_config({"JMAPMONO_WORKERS": bad})
