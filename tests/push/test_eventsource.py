"""EventSource push (RFC 8620 §7.3) over real sockets: parameters, auth, headers, pings, state events with
ids, types, closeafter, Last-Event-ID resume, one event per chunk, disconnects, isolation, gunicorn."""

from __future__ import annotations

import signal
import socket
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import gevent
import pytest
import requests

from jmapmono.events.event import Event
from jmapmono.mailbox.changes import token
from jmapmono.push import eventsource, push_state
from jmapmono.push.eventsource import ParameterError, parse_params
from jmapmono.push.jmap_bus_events import REVOCATIONS_KEY, user_key
from tests.support.eventsource_client import ALL, Stream, listening, stream_server
from tests.support.jmap import PASSWORD, basic_auth
from tests.support.servers import start_gunicorn
from tests.support.waiting import wait_until


def message(n: int = 0) -> bytes:
    return f"From: carol@example.net\r\nSubject: note {n}\r\nMessage-ID: <{n}.{time.time()}@t>\r\n\r\nHi.\r\n".encode()


@pytest.fixture
def config(config):
    """Pings as short as one second, so the tests can see them."""
    return config.with_overrides(eventsource_min_ping=1)


@pytest.fixture
def server(services, app, alice, bob):
    """A real HTTP server (the one ``serve`` builds) on a free port, with the event flow running."""
    with stream_server(services, app) as connect:
        yield connect


def stream_keys(services) -> list[str]:
    """The bus keys listened to for streams (the flow's own revocation listener aside)."""
    return [key for key in services.jmap_bus.keys() if key != REVOCATIONS_KEY]


def url(port: int, query: str) -> str:
    return f"http://127.0.0.1:{port}/jmap/eventsource{query}"


# -- parameters, authentication, headers -----------------------------------------------------------------------------


def test_ping_is_clamped_into_the_configured_range():
    assert parse_params({"types": "*", "closeafter": "no", "ping": "0"}, 10, 300).ping == 0
    assert parse_params({"types": "*", "closeafter": "no", "ping": "3"}, 10, 300).ping == 10
    assert parse_params({"types": "*", "closeafter": "no", "ping": "45"}, 10, 300).ping == 45
    huge = parse_params({"types": "*", "closeafter": "state", "ping": "86400"}, 10, 300)
    assert (huge.ping, huge.requested_ping, huge.close_after_state, huge.types) == (300, 86400, True, None)
    some = parse_params({"types": "Email, EmailDelivery", "closeafter": "no", "ping": "30"}, 10, 300)
    assert some.types == {"Email", "EmailDelivery"}
    # A type this server does not push is ignored (the RFC's own example asks for CalendarEvent) ...
    assert parse_params({"types": "Email,CalendarEvent", "closeafter": "no", "ping": "30"}, 10, 300).types == {"Email"}
    # ... but something that is not a type name at all is refused.
    with pytest.raises(ParameterError) as e:
        parse_params({"types": "Email,<script>", "closeafter": "no", "ping": "30"}, 10, 300)
    assert "<script>" in e.value.detail


BAD = [
    ("?closeafter=no&ping=0", "types"),
    ("?types=*&ping=0", "closeafter"),
    ("?types=*&closeafter=no", "ping"),
    ("?types=Email,Bo-gus&closeafter=no&ping=0", "types"),
    ("?types=&closeafter=no&ping=0", "types"),
    ("?types=Email,,Mailbox&closeafter=no&ping=0", "types"),
    ("?types=*&closeafter=maybe&ping=0", "closeafter"),
    ("?types=*&closeafter=State&ping=0", "closeafter"),
    ("?types=*&closeafter=no&ping=abc", "ping"),
    ("?types=*&closeafter=no&ping=-5", "ping"),
    ("?types=*&closeafter=no&ping=1.5", "ping"),
    ("?types=*&closeafter=no&ping=9007199254740992", "ping"),
    ("?types=*&types=Email&closeafter=no&ping=0", "types"),
]


def test_each_bad_parameter_is_a_400_problem_naming_it(services, server):
    for query, parameter in BAD:
        r = requests.get(url(server.port, query), headers=basic_auth("alice@example.org"), timeout=10)
        assert r.status_code == 400, (query, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json", query
        problem = r.json()
        assert (problem["status"], problem["parameter"]) == (400, parameter), (query, problem)
        assert problem["detail"], query
    assert stream_keys(services) == []  # no stream was opened


def test_authentication_is_required(services, server, alice):
    r = requests.get(url(server.port, "?types=*&closeafter=no&ping=0"), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    wrong = basic_auth("alice@example.org", PASSWORD + "x")
    r = requests.get(url(server.port, "?types=*&closeafter=no&ping=0"), headers=wrong, timeout=10)
    assert r.status_code == 401 and r.headers["Content-Type"] == "application/problem+json"
    # Authentication comes first: bad parameters without credentials are a 401, not a 400.
    assert requests.get(url(server.port, "?types=Bogus"), timeout=10).status_code == 401
    assert listening(services, alice.account_id) == 0


def test_headers_and_the_opening_block_carry_the_current_push_state(services, server, alice):
    services.mailboxes.deliver(alice.email, message())
    stream = server(ALL)
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert stream.headers["cache-control"] == "no-cache, no-store"
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in stream.headers and "content-encoding" not in stream.headers
    opening = stream.block()
    assert set(opening) == {"", "id"}  # a comment and an id: no event is dispatched, nothing is dumped
    seq = push_state.current_seqs(services.db, [alice.account_id])[alice.account_id]
    assert seq > 0 and push_state.decode(opening["id"]) == {alice.account_id: seq}
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    assert services.jmap_bus.listener_count(user_key(services.accounts.get(alice.email).id)) == 1


def test_the_session_url_template_expands_to_a_stream(server, alice):
    session = requests.get(f"http://127.0.0.1:{server.port}/.well-known/jmap", headers=basic_auth(alice.email))
    template = session.json()["eventSourceUrl"]
    # RFC 6570 level 1: reserved characters in values are percent-encoded.
    for types, closeafter, ping in (("Email%2CEmailDelivery", "state", "300"), ("%2A", "no", "0")):
        expanded = urlsplit(template.format(types=types, closeafter=closeafter, ping=ping))
        assert expanded.path == "/jmap/eventsource", template
        stream = server(f"{expanded.path}?{expanded.query}")
        assert stream.status == 200 and "id" in stream.block()


def test_head_opens_no_stream(services, server, alice):
    r = requests.head(url(server.port, "?types=*&closeafter=no&ping=0"), headers=basic_auth(alice.email), timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    wait_until(lambda: stream_keys(services) == [], message="the HEAD request's listeners to go")


# -- events ----------------------------------------------------------------------------------------------------------


def test_ping_events_carry_the_interval_and_no_id(services, server, alice, monkeypatch):
    """A ping whenever the interval passed since the last event, by the stream's clock (here, the test's)."""
    now = [time.monotonic()]
    with monkeypatch.context() as patch:
        patch.setattr(eventsource, "time", SimpleNamespace(monotonic=lambda: now[0]))
        stream = server("/jmap/eventsource?types=*&closeafter=no&ping=1")
        assert "id" in stream.block()
        wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
        services.mailboxes.deliver(alice.email, message())
        stream.state()  # no time passed: the state event, and no ping before it
        now[0] += 1  # an interval since the state event
        first = stream.block()
        now[0] += 1  # an interval since the first ping
        second = stream.block()
        (open_stream,) = services.event_streams.streams
        wait_until(lambda: open_stream.pings == 2, message="the second ping to be counted")
    for ping in (first, second):
        assert ping == {"event": "ping", "data": '{"interval":1}'}  # no id: a ping does not move Last-Event-ID


def test_state_event_on_delivery_has_the_states_and_a_push_state_id(services, server, alice):
    stream = server(ALL)
    stream.block()
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    services.mailboxes.deliver(alice.email, message())
    data, event_id = stream.state()
    assert set(data) == {"@type", "changed"} and data["@type"] == "StateChange"  # no pushState in the data
    now = services.changes.states(alice.account_id)
    assert data["changed"] == {alice.account_id: {t: now[t] for t in ("Email", "Mailbox", "Thread", "EmailDelivery")}}
    seq = push_state.current_seqs(services.db, [alice.account_id])[alice.account_id]
    assert push_state.decode(event_id) == {alice.account_id: seq}


def test_types_filter_a_flag_change_sends_nothing_a_delivery_does(services, server, alice):
    stream = server("/jmap/eventsource?types=EmailDelivery&closeafter=no&ping=1")
    stream.block()
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    delivered = services.mailboxes.deliver(alice.email, message(1))
    first, _ = stream.state()  # the first delivery's push, out of the way before the flag change
    assert set(first["changed"][alice.account_id]) == {"EmailDelivery"}
    services.mailboxes.set_keywords(alice.account_id, [delivered.message_id], add=["$seen"])
    services.mailboxes.deliver(alice.email, message(2))
    data, _ = stream.state()  # the flag change, first, sent nothing: this is the delivery
    assert data["changed"] == {
        alice.account_id: {"EmailDelivery": services.changes.state(alice.account_id, "EmailDelivery")}
    }
    assert stream.block()["event"] == "ping"  # and nothing else came since


def test_closeafter_state_ends_the_response_after_the_first_state_event(services, server, alice):
    stream = server("/jmap/eventsource?types=Email&closeafter=state&ping=0")
    stream.block()
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    services.mailboxes.deliver(alice.email, message())
    data, _ = stream.state()
    assert list(data["changed"][alice.account_id]) == ["Email"]
    assert stream.chunk() is None  # the last chunk: the response is complete
    wait_until(lambda: stream_keys(services) == [], message="the listeners to go")


def test_last_event_id_resumes_exactly_what_moved_and_nothing_when_nothing_did(services, server, alice):
    services.mailboxes.deliver(alice.email, message(1))
    first = server(ALL)
    resume_from = first.block()["id"]
    before = services.changes.states(alice.account_id)
    first.close()
    wait_until(lambda: listening(services, alice.account_id) == 0, message="the first stream to end")
    for n in (2, 3):  # missed while disconnected
        services.mailboxes.deliver(alice.email, message(n))
    after = services.changes.states(alice.account_id)
    moved = {t for t in after if after[t] != before[t]}
    assert moved == {"Email", "Mailbox", "Thread", "EmailDelivery"}

    again = server("/jmap/eventsource?types=*&closeafter=no&ping=1", **{"Last-Event-ID": resume_from})
    assert again.block() == {"": "jmapmono push"}  # a resuming client keeps its id until a state event
    data, new_id = again.state()
    assert data["changed"] == {alice.account_id: {t: after[t] for t in moved}}
    again.close()

    # From the new id nothing moved: no state event, the next event is a ping.
    third = server("/jmap/eventsource?types=*&closeafter=no&ping=1", **{"Last-Event-ID": new_id})
    assert third.event()["event"] == "ping"
    # Types filter the resume too.
    fourth = server("/jmap/eventsource?types=EmailDelivery&closeafter=state&ping=0", **{"Last-Event-ID": resume_from})
    data, _ = fourth.state()
    assert data["changed"] == {alice.account_id: {"EmailDelivery": after["EmailDelivery"]}}
    assert fourth.chunk() is None


def test_a_burst_is_coalesced_and_every_chunk_is_one_whole_event(services, server, alice):
    stream = server(ALL)
    stream.block()
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    for seq in range(1, 301):
        change = Event.new("StateChange", {"accountId": alice.account_id, "changed": {"Email": token(seq)}})
        services.jmap_bus.dispatch(change, keys=[alice.account_id])
        if seq % 7 == 0:
            gevent.idle()  # now and then the stream writes what it has: some states go out, others coalesce
    received = []
    while not received or received[-1] != token(300):
        data, event_id = stream.state()  # asserts one whole event per chunk
        received.append(data["changed"][alice.account_id]["Email"])
        assert push_state.decode(event_id)[alice.account_id] >= int(received[-1], 36)
    assert [int(s, 36) for s in received] == sorted(int(s, 36) for s in received)  # newest wins, in order
    assert len(received) <= 300


# -- the end of a stream ---------------------------------------------------------------------------------------------


def test_a_client_hanging_up_unregisters_at_once_without_pings(services, server, alice):
    stream = server(ALL)  # ping=0: only the socket tells
    stream.block()
    user = user_key(services.accounts.get(alice.email).id)
    wait_until(lambda: listening(services, alice.account_id) == 1 and listening(services, user) == 1)
    stream.close()
    wait_until(lambda: stream_keys(services) == [], timeout=3, message="the listeners to go")


def test_a_client_that_stops_reading_is_cut_after_the_write_timeout(services, server, alice):
    services.config = services.config.with_overrides(eventsource_write_timeout_seconds=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", server.port))
    auth = basic_auth(alice.email)["Authorization"]
    sock.sendall(f"GET {ALL} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
    hub = services.event_streams
    wait_until(lambda: len(hub) == 1, message="the stream to open")
    (stream,) = hub.streams
    stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a slow link: no buffer autotuning
    seq = 0
    while stream.writing_since is None:  # one state event at a time, until a write blocks for good
        seq += 1
        assert seq < 20_000, "the socket never filled up"
        written = stream.state_events
        change = Event.new("StateChange", {"accountId": alice.account_id, "changed": {"Email": token(seq)}})
        services.jmap_bus.dispatch(change, keys=[alice.account_id])
        wait_until(lambda w=written: stream.state_events > w or stream.writing_since is not None, message="a write")
    wait_until(lambda: stream_keys(services) == [], timeout=5, message="the blocked stream to be cut")
    assert stream.end_reason == "write_timeout" and len(hub) == 0
    sock.close()


def test_shutdown_ends_every_stream_and_refuses_new_ones(services, server, alice, bob):
    streams = [server(ALL), server(ALL, user=bob.email)]
    for stream in streams:
        stream.block()
    wait_until(lambda: len(services.event_streams) == 2)
    assert services.event_streams.close_all(timeout=10) == 2  # returns once both ended (at once, here)
    for stream in streams:
        assert stream.chunk() is None  # each response ended cleanly: the clients reconnect elsewhere
    assert stream_keys(services) == []
    assert server(ALL).status == 503


# -- users ------------------------------------------------------------------------------------------------------------


def test_two_users_are_isolated(services, server, alice, bob):
    alices = server("/jmap/eventsource?types=*&closeafter=no&ping=1")
    bobs = server("/jmap/eventsource?types=*&closeafter=no&ping=1", user=bob.email)
    alices.block(), bobs.block()
    wait_until(lambda: listening(services, alice.account_id) == 1 and listening(services, bob.account_id) == 1)
    services.mailboxes.deliver(bob.email, message())
    data, _ = bobs.state()
    assert list(data["changed"]) == [bob.account_id]
    assert alices.event()["event"] == "ping"  # alice heard nothing of bob's mail
    services.mailboxes.deliver(alice.email, message())
    data, _ = alices.state()
    assert list(data["changed"]) == [alice.account_id]


def test_a_delegation_granted_while_connected_takes_effect(services, server, alice, bob):
    stream = server(ALL, user=bob.email)
    stream.block()
    wait_until(lambda: listening(services, bob.account_id) == 1)
    services.accounts.delegate(alice.email, bob.email)
    data, _ = stream.state()  # what bob can now see of alice's account, at once
    assert list(data["changed"]) == [alice.account_id]
    services.mailboxes.deliver(alice.email, message())
    data, _ = stream.state()
    assert data["changed"][alice.account_id]["EmailDelivery"] == services.changes.state(
        alice.account_id, "EmailDelivery"
    )
    services.accounts.undelegate(alice.email, bob.email)
    wait_until(lambda: listening(services, alice.account_id) == 0, message="alice's account to be dropped")


# -- under gunicorn --------------------------------------------------------------------------------------------------


def test_under_gunicorn_gevent_worker(services, config, alice, tmp_path):
    server = start_gunicorn(config.database_url, config.data_dir, tmp_path, graceful_timeout=120)
    try:
        wait_until(lambda: "relay_started" in server.log(), 15, message="the worker's relay")
        path = "/jmap/eventsource?types=Email&closeafter=no&ping=0"
        stream, other = (
            Stream(server.port, path, basic_auth(alice.email)),
            Stream(server.port, path, basic_auth(alice.email)),
        )
        assert stream.status == 200 and stream.headers["transfer-encoding"] == "chunked"
        assert "id" in stream.block() and "id" in other.block()
        wait_until(lambda: server.log().count("event=eventsource_open") == 2, 10, message="the streams to open")
        services.mailboxes.deliver(alice.email, message())  # another process: the outbox and the doorbell
        for each in (stream, other):
            data, _ = each.state()
            assert data["changed"] == {alice.account_id: {"Email": services.changes.state(alice.account_id, "Email")}}
        stream.close()
        wait_until(lambda: "reason=client_gone" in server.log(), 10, message="the worker to see the client hang up")
        # SIGTERM: the open stream ends, cleanly (a last chunk), and the worker exits long before its graceful
        # timeout would have let gunicorn kill it (which would end the response without that chunk).
        server.send_signal(signal.SIGTERM)
        assert other.chunk() is None
        assert server.proc.wait(timeout=60) == 0
        other.close()
    finally:
        server.stop(signal.SIGKILL)
    log = server.log()
    assert "reason=shutdown" in log and "Traceback" not in log, log


def test_ping_limits_are_checked_at_start():
    from jmapmono.config import ConfigError, load_config

    config = load_config({"JMAPMONO_EVENTSOURCE_MIN_PING": "30", "JMAPMONO_EVENTSOURCE_MAX_PING": "900"})
    assert (config.eventsource_min_ping, config.eventsource_max_ping) == (30, 900)
    for name, value in (
        ("JMAPMONO_EVENTSOURCE_MIN_PING", "31"),
        ("JMAPMONO_EVENTSOURCE_MIN_PING", "0"),
        ("JMAPMONO_EVENTSOURCE_MAX_PING", "299"),
        ("JMAPMONO_EVENTSOURCE_WRITE_TIMEOUT", "soon"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_config({name: value})
