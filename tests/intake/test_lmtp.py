"""The LMTP server, over real sockets, against a real ``python -m jmapmono lmtp`` process.

Each test starts the server on the test's database (SQLite and Postgres) and
checks the replies an MTA sees and the bytes stored.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jmapmono.config import ConfigError, load_config
from jmapmono.intake.lmtp import enhanced, trace_headers
from jmapmono.main import needs_gevent
from jmapmono.store import open_database
from jmapmono.store.migrations import migrate
from tests.support.lmtp_client import LMTPClient, dot_stuff
from tests.support.servers import (
    ROOT,
    LmtpProcess,
    PostgresServer,
    free_port,
    jmapmono_env,
    start_lmtp,
    wait_for_port,
)
from tests.support.waiting import wait_until

MAX_SIZE = 100_000
MESSAGE = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hello\r\n\r\nHi Alice.\r\n"


def start(database_url: str, tmp_path) -> LmtpProcess:
    """The LMTP server these tests talk to: messages up to MAX_SIZE."""
    return start_lmtp(database_url, tmp_path, JMAPMONO_MAX_MESSAGE_SIZE=str(MAX_SIZE))


@pytest.fixture
def lmtp(services, config, tmp_path) -> Iterator[LmtpProcess]:
    """An LMTP server process on the test's (already migrated) database."""
    server = start(config.database_url, tmp_path)
    yield server
    server.stop()


def stored(services, email: str) -> list[bytes]:
    """Every message stored for ``email``, oldest first, as the raw bytes of its blob."""
    user = services.accounts.get(email)
    with services.db.read() as tx:
        rows = tx.query(
            "SELECT blob_id FROM messages WHERE account_id = ? ORDER BY received_at, id", (user.account_id,)
        )
    return [services.blobs.get(user.account_id, r["blob_id"]) for r in rows]


def body_of(raw: bytes) -> bytes:
    """The message as the sender sent it: the stored bytes less the two trace headers we prepend."""
    assert raw.startswith(b"Return-Path: <"), raw[:200]
    received = raw.index(b"\r\nReceived: ") + 2
    end = raw.index(b"\r\n", raw.index(b"with LMTP;", received) + 12) + 2  # the date line ends the header
    return raw[end:]


def test_lhlo_advertises_what_an_lmtp_server_must(lmtp):
    with LMTPClient("127.0.0.1", lmtp.port) as client:
        assert client.greeting.code == 220
        reply = client.lhlo("mx.example.org")
        assert reply.code == 250
        assert f"SIZE {MAX_SIZE}" in reply.lines
        for extension in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"):
            assert extension in reply.lines
        assert client.command("HELO mx.example.org").code == 500  # LMTP has LHLO only
        reply = client.rcpt("alice@example.org")
        assert (reply.code, reply.lines[0][:5]) == (503, "5.5.1")  # enhanced code on aiosmtpd's own replies


def test_multi_recipient_with_unknown_user(services, lmtp):
    services.accounts.create_user("alice@example.org")
    services.accounts.create_user("bob@example.org")
    with lmtp.client() as client:
        rcpt, data = client.transaction(
            "carol@example.net",
            ["alice@example.org", "nobody@example.org", "Bob@Example.org", "alice@example.org"],
            MESSAGE,
        )
    assert [r.code for r in rcpt] == [250, 550, 250, 250]
    assert rcpt[1].lines[0].startswith("5.1.1")
    # One reply per accepted recipient, in RCPT order.
    assert [r.code for r in data] == [250, 250, 250]
    assert all(r.lines[0].startswith("2.0.0") for r in data)
    assert "alice@example.org" in data[0].text and "Bob@Example.org" in data[1].text
    # The same user named twice gets one copy.
    alice, bob = stored(services, "alice@example.org"), stored(services, "bob@example.org")
    assert len(alice) == 1 and len(bob) == 1
    assert body_of(alice[0]) == MESSAGE and alice[0] == bob[0]
    assert alice[0].startswith(b"Return-Path: <carol@example.net>\r\nReceived: from client.example ([127.0.0.1])")
    delivered = [line for line in lmtp.log().splitlines() if "event=lmtp_delivery " in line]
    assert len(delivered) == 2
    assert all("result=250" in line and f"size={len(alice[0])}" in line and " ms=" in line for line in delivered)


def test_size_declared_over_the_limit_is_refused_at_mail(services, lmtp):
    services.accounts.create_user("alice@example.org")
    with lmtp.client() as client:
        reply = client.mail("bob@example.org", f"SIZE={MAX_SIZE + 1}")
        assert (reply.code, reply.lines[0][:5]) == (552, "5.3.4")
        assert client.mail("bob@example.org", f"SIZE={MAX_SIZE}").code == 250
        assert client.rcpt("alice@example.org").code == 250
        assert [r.code for r in client.data(MESSAGE, 1)] == [250]


def test_message_over_the_limit_gets_552_per_recipient(services, lmtp):
    services.accounts.create_user("alice@example.org")
    services.accounts.create_user("bob@example.org")
    head = b"Subject: big\r\n\r\n"
    at_limit = head + b"x" * (MAX_SIZE - len(head) - 2) + b"\r\n"
    assert len(at_limit) == MAX_SIZE
    over = at_limit + b".\r\n"  # one more line, and a stuffed one: the limit counts the message, not the wire
    with lmtp.client() as client:
        _, data = client.transaction("c@example.net", ["alice@example.org", "bob@example.org"], over)
        assert [(r.code, r.lines[0][:5]) for r in data] == [(552, "5.3.4"), (552, "5.3.4")]
        # The session goes on, and a message exactly at the limit is accepted.
        _, data = client.transaction("c@example.net", ["alice@example.org"], at_limit)
        assert [r.code for r in data] == [250]
    assert [body_of(m) for m in stored(services, "alice@example.org")] == [at_limit]
    assert stored(services, "bob@example.org") == []


def test_dot_stuffing_and_line_endings_round_trip(services, lmtp):
    services.accounts.create_user("alice@example.org")
    message = (
        b"Subject: dots\r\n\r\n"
        b".\r\n"  # a line that is a lone dot
        b"..\r\n"
        b".leading dot\r\n"
        b"a line ending with a dot .\r\n"
        b"bare\nLF and bare\rCR inside a line\r\n" + b"y" * 5000 + b"\r\n"  # longer than SMTP's 1000-octet line limit
        b"\r\n.\r\n"
    )
    with lmtp.client() as client:
        _, data = client.transaction("b@example.org", ["alice@example.org"], message)
    assert [r.code for r in data] == [250]
    [raw] = stored(services, "alice@example.org")
    assert body_of(raw) == message


def test_eight_bit_and_binary_body_kept_byte_exact(services, lmtp):
    services.accounts.create_user("alice@example.org")
    rng = random.Random(2033)
    noise = bytes(rng.randrange(256) for _ in range(20_000))
    message = (
        b"Subject: =?bogus-charset?Q?x?=\r\nContent-Type: text/plain; charset=nonsense\r\n\r\n"
        + "héllo wörld €\r\n".encode()
        + "latin-1 \xe9t\xe9\r\n".encode("latin-1")
        + noise
        + b"\r\n"
    )
    with lmtp.client() as client:
        client.mail("b@example.org", "BODY=8BITMIME")
        assert client.rcpt("alice@example.org").code == 250
        assert [r.code for r in client.data(message, 1)] == [250]
    [raw] = stored(services, "alice@example.org")
    assert body_of(raw) == message


def test_null_sender_gets_an_empty_return_path(services, lmtp):
    services.accounts.create_user("alice@example.org")
    with lmtp.client() as client:
        _, data = client.transaction("", ["alice@example.org"], MESSAGE)
    assert [r.code for r in data] == [250]
    [raw] = stored(services, "alice@example.org")
    assert raw.startswith(b"Return-Path: <>\r\n")


def test_user_deleted_between_rcpt_and_data_gets_550(services, lmtp):
    services.accounts.create_user("alice@example.org")
    services.accounts.create_user("bob@example.org")
    with lmtp.client() as client:
        client.mail("c@example.net")
        assert client.rcpt("alice@example.org").code == 250
        assert client.rcpt("bob@example.org").code == 250
        services.accounts.delete("alice@example.org")
        data = client.data(MESSAGE, 2)
    assert [(r.code, r.lines[0][:5]) for r in data] == [(550, "5.1.1"), (250, "2.0.0")]
    assert len(stored(services, "bob@example.org")) == 1


def test_empty_message_is_refused_per_recipient(services, lmtp):
    services.accounts.create_user("alice@example.org")
    with lmtp.client() as client:
        client.mail("b@example.org")
        client.rcpt("alice@example.org")
        assert client.command("DATA").code == 354
        client.send(b".\r\n")
        reply = client.read_reply()
    assert (reply.code, reply.lines[0][:5]) == (554, "5.6.0")
    assert stored(services, "alice@example.org") == []


def test_sigterm_says_421_to_idle_clients_and_exits_0(services, lmtp):
    client = lmtp.client()
    lmtp.proc.send_signal(signal.SIGTERM)
    reply = client.read_reply()
    assert (reply.code, reply.lines[0][:5]) == (421, "4.3.2")
    assert lmtp.proc.wait(timeout=10) == 0  # it does not wait for the idle client to leave
    client.close()


def test_database_unreachable_at_rcpt_gets_451(tmp_path):
    """The server starts without its database and says 451 (try later) rather than refusing connections."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    server = start(url, tmp_path)
    try:
        with server.client() as client:
            client.mail("b@example.org")
            reply = client.rcpt("alice@example.org")
        assert (reply.code, reply.lines[0][:5]) == (451, "4.3.0")
    finally:
        assert server.stop() == 0
    assert "event=lmtp_database_unavailable" in server.log()
    assert "Traceback" not in server.log()


@pytest.mark.skipif(
    "postgres" not in os.environ.get("JMAPMONO_TEST_BACKENDS", "sqlite,postgres"), reason="needs Postgres"
)
def test_database_down_after_rcpt_gets_451_per_recipient_then_retry_delivers_once(tmp_path):
    """Postgres stops mid-transaction: each recipient gets 451, nothing is half-stored, a retry delivers."""
    pg = PostgresServer()  # its own cluster: this test stops and restarts it
    try:
        url = pg.new_database()
        db = open_database(url)
        migrate(db)
        db.close()
        from jmapmono.config import load_config
        from jmapmono.runtime import Runtime

        services = Runtime(load_config({"DATABASE_URL": url, "JMAPMONO_DATA_DIR": str(tmp_path)}))
        services.accounts.create_user("alice@example.org")
        services.accounts.create_user("bob@example.org")
        services.close()
        server = start(url, tmp_path)
        try:
            rcpts = ["alice@example.org", "bob@example.org"]
            with server.client() as client:
                client.mail("c@example.net")
                assert [client.rcpt(r).code for r in rcpts] == [250, 250]
                pg.halt()
                data = client.data(MESSAGE, 2)
            assert [(r.code, r.lines[0][:5]) for r in data] == [(451, "4.3.0"), (451, "4.3.0")]
            pg.resume()

            pending = list(rcpts)

            def retry() -> bool:  # as an MTA would: again, for the recipients not yet accepted
                with server.client() as client:
                    rcpt_replies, data = client.transaction("c@example.net", pending, MESSAGE)
                accepted = [r for r, reply in zip(pending, rcpt_replies, strict=True) if reply.code == 250]
                for rcpt, reply in zip(accepted, data, strict=False):
                    if reply.code == 250:
                        pending.remove(rcpt)
                return not pending

            wait_until(retry, timeout=20, message="a retried delivery to succeed")
        finally:
            assert server.stop() == 0
        db = open_database(url)
        with db.read() as tx:
            assert tx.value("SELECT COUNT(*) FROM messages") == 2  # one each, nothing from the failed attempt
        db.close()
    finally:
        pg.stop()


def test_enhanced_codes_are_added_only_where_rfc_2034_wants_them():
    assert enhanced("250 OK") == "250 2.0.0 OK"
    assert enhanced("503 Error: need MAIL command") == "503 5.5.1 Error: need MAIL command"
    assert enhanced("552 Error: message size exceeds fixed maximum message size").startswith("552 5.3.4 ")
    assert enhanced("550 5.1.1 <a@b.c>: no such user") == "550 5.1.1 <a@b.c>: no such user"
    assert enhanced("220 host jmapmono LMTP") == "220 host jmapmono LMTP"  # the greeting has none
    assert enhanced("354 End data with <CR><LF>.<CR><LF>") == "354 End data with <CR><LF>.<CR><LF>"
    assert enhanced("599 odd") == "599 5.0.0 odd"


def test_trace_headers_are_safe_whatever_the_client_says():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = trace_headers("<>", "evil\r\nX-Injected: yes", ("::1", 25, 0, 0), "mail.example.org", when)
    assert headers == (
        b"Return-Path: <>\r\n"
        b"Received: from evil__X-Injected:_yes ([IPv6:::1])\r\n"
        b"\tby mail.example.org (jmapmono) with LMTP;\r\n"
        b"\tFri, 02 Jan 2026 03:04:05 +0000\r\n"
    )


def test_dot_stuffing_of_the_test_client():
    assert dot_stuff(b"a\r\n.\r\n.b\r\n") == b"a\r\n..\r\n..b\r\n.\r\n"
    assert dot_stuff(b".x\r\n") == b"..x\r\n.\r\n"


def test_only_lmtp_and_deliver_run_without_gevent():
    assert not needs_gevent(["lmtp", "--listen", "127.0.0.1:24"])
    assert not needs_gevent(["deliver", "--to", "a@example.org"])
    assert needs_gevent(["serve", "--port", "8080"])
    assert needs_gevent(["user", "add", "lmtp@example.org"])
    assert needs_gevent(["--help"])


def test_lmtp_refuses_to_run_in_a_gevent_patched_process(tmp_path):
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "from jmapmono.cli.main import main\n"
        "raise SystemExit(main(['lmtp', '--listen', '127.0.0.1:1']))\n"
    )
    env = jmapmono_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 70
    assert b"gevent" in result.stderr and b"Traceback" not in result.stderr


def test_listen_address_in_use_exits_75_with_a_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "jmapmono", "lmtp", "--listen", f"127.0.0.1:{port}"]
        env = jmapmono_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 75
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


# --- who may connect -----------------------------------------------------------------------------------------------


class ClientFrom(LMTPClient):
    """An LMTP client whose connection leaves from ``source`` (another loopback address than 127.0.0.1)."""

    def __init__(self, source: str, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_reply()


def test_clients_outside_the_allowed_networks_get_554_and_are_logged(services, config, tmp_path):
    services.accounts.create_user("alice@example.org")
    server = start_lmtp(config.database_url, tmp_path, JMAPMONO_LMTP_ALLOWED_NETWORKS="127.0.0.1/32, ::1")
    try:
        with ClientFrom("127.0.0.2", server.port) as outsider:
            assert outsider.greeting.code == 554  # RFC 5321 §3.1: refused for good, not "try again later" (421)
            assert outsider.lhlo().code == 503
            assert outsider.command("MAIL FROM:<ceo@bank.example>").code == 503
            assert outsider.rcpt("alice@example.org").code == 503
            assert outsider.command("QUIT").code == 221
        with ClientFrom("127.0.0.1", server.port) as insider:
            assert insider.greeting.code == 220 and insider.lhlo().code == 250
            rcpt, data = insider.transaction("c@example.net", ["alice@example.org"], MESSAGE)
            assert [r.code for r in rcpt + data] == [250, 250]
        wait_until(lambda: "event=lmtp_refused peer=127.0.0.2:" in server.log(), 10, message="the refusal logged")
    finally:
        assert server.stop() == 0
    assert len(stored(services, "alice@example.org")) == 1
    assert "allowed=127.0.0.1/32,::1/128" in server.log()


def test_by_default_every_loopback_client_is_served(lmtp):
    with ClientFrom("127.0.0.2", lmtp.port) as client:
        assert client.greeting.code == 220 and client.lhlo().code == 250


def test_the_procfile_runs_lmtp_on_loopback_only(services, config, tmp_path):
    [line] = [x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("lmtp:")]
    port = free_port()
    env = jmapmono_env(config.database_url, tmp_path / "data", LMTP_PORT=str(port))
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"  # `python` is this interpreter
    with (tmp_path / "procfile-lmtp.log").open("wb") as log:
        proc = subprocess.Popen(
            ["sh", "-c", "exec " + line.split(":", 1)[1].strip()], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        wait_for_port(port, 20, proc)
        with pytest.raises(ConnectionRefusedError):  # bound to 127.0.0.1, not to every address
            socket.create_connection(("127.0.0.2", port), timeout=10).close()
    finally:
        LmtpProcess(proc, port, tmp_path / "procfile-lmtp.log").stop()


def test_allowed_networks_setting():
    from jmapmono.config import LOOPBACK_NETWORKS, parse_networks
    from jmapmono.intake.lmtp import peer_allowed

    assert load_config({}).lmtp_allowed_networks == LOOPBACK_NETWORKS
    nets = load_config({"JMAPMONO_LMTP_ALLOWED_NETWORKS": "10.0.0.0/8,192.0.2.7 2001:db8::/32"}).lmtp_allowed_networks
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    for bad in ("10.0.0.1/8", "mail.example.org", "10.0.0.0/33", ","):
        with pytest.raises(ConfigError, match="JMAPMONO_LMTP_ALLOWED_NETWORKS"):
            load_config({"JMAPMONO_LMTP_ALLOWED_NETWORKS": bad})
    assert peer_allowed(("127.0.0.1", 4000), LOOPBACK_NETWORKS)
    assert peer_allowed(("::ffff:127.0.0.1", 4000, 0, 0), LOOPBACK_NETWORKS)  # IPv4-mapped, dual-stack listener
    assert peer_allowed(("::1", 4000, 0, 0), LOOPBACK_NETWORKS)
    assert not peer_allowed(("10.1.2.3", 4000), LOOPBACK_NETWORKS)
    assert not peer_allowed(("::ffff:10.1.2.3", 4000, 0, 0), LOOPBACK_NETWORKS)
    assert not peer_allowed(None, LOOPBACK_NETWORKS) and not peer_allowed("", LOOPBACK_NETWORKS)
    assert peer_allowed(("10.1.2.3", 25), parse_networks("10.0.0.0/8", "x"))


def test_lmtp_command_takes_allowed_networks(tmp_path):
    argv = [sys.executable, "-m", "jmapmono", "lmtp", "--listen", "127.0.0.1:1", "--allowed-networks", "nonsense"]
    env = jmapmono_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 64  # EX_USAGE
    assert b"--allowed-networks" in result.stderr and b"Traceback" not in result.stderr


def test_a_recipient_over_quota_gets_552_and_the_others_their_copy(services, lmtp):
    services.accounts.create_user("alice@example.org")
    bob, _ = services.accounts.create_user("bob@example.org")
    services.mailboxes.set_quota(bob.account_id, octets=len(MESSAGE))  # the trace headers make it larger
    with lmtp.client() as client:
        client.mail("c@example.net")
        assert client.rcpt("bob@example.org").code == 250
        assert client.rcpt("alice@example.org").code == 250
        data = client.data(MESSAGE, 2)
    assert [(r.code, r.lines[0][:5]) for r in data] == [(552, "5.2.2"), (250, "2.0.0")]
    assert stored(services, "bob@example.org") == [] and len(stored(services, "alice@example.org")) == 1
