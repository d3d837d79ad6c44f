"""Operator endpoints: /healthz (alive), /readyz (store, bus, relay) and /metrics (allowlist, values that move)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jmapmono.clock import now_ms
from tests.support.jmap import PASSWORD
from tests.support.servers import start_app
from tests.support.waiting import wait_until

ALICE = "alice@example.org"
ECHO = {"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": 1}, "0"]]}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels`` in a text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def old_pending_row(db, age_seconds: int) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO event_outbox (bus, event, created_at) VALUES (?, ?, ?)",
            ("mailbox", '{"type":"Probe"}', now_ms() - age_seconds * 1000),
        )


def test_healthz_answers_without_auth_or_store(client, db):
    db.close()  # alive says nothing about the store
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_ready_with_the_event_flow_running(config, db):
    server = start_app(config, db)
    try:
        wait_until(server.services.buses_ready, message="buses connected")
        status, _, body = get(server.url + "/readyz")
        assert status == 200
        assert json.loads(body) == {"status": "ok", "checks": {"store": "ok", "bus": "ok", "relay": "ok"}}
    finally:
        server.stop()


def test_readyz_names_a_stuck_relay(client, db, config):
    old_pending_row(db, config.ready_outbox_max_age_seconds + 60)  # no relay runs in this process
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    body = response.get_json()
    assert body["failed"] == ["relay"]
    assert body["checks"] == {"store": "ok", "bus": "off", "relay": "stuck"}


def test_readyz_ignores_a_recent_pending_row(client, db):
    old_pending_row(db, 1)
    assert client.get("/readyz").status_code == 200


def test_readyz_names_an_unreachable_postgres(tmp_path):
    from jmapmono.config import load_config
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app
    from tests.support.servers import PostgresServer

    try:
        pg = PostgresServer()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        env = {"DATABASE_URL": pg.new_database(), "JMAPMONO_DATA_DIR": str(tmp_path), "JMAPMONO_LMTP_LISTEN": "off"}
        runtime = Runtime(load_config(env))
        client = create_app(runtime).test_client()
        assert client.get("/readyz").status_code == 200
        pg.halt()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["failed"] == ["store"]
        assert response.get_json()["checks"]["store"] == "unreachable"
        pg.resume()
        wait_until(lambda: client.get("/readyz").status_code == 200, message="ready again after the outage")
        runtime.stop()
    finally:
        pg.stop()


def test_probes_are_logged_at_debug(client, caplog):
    with caplog.at_level("INFO", logger="jmapmono.http"):
        for path in ("/healthz", "/readyz", "/metrics"):
            client.get(path)
    assert [r for r in caplog.records if r.name == "jmapmono.http"] == []


def test_metrics_are_not_served_outside_the_allowed_networks(client):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 404
    assert b"jmapmono_" not in response.get_data()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_allowlist_checks_the_client_behind_a_trusted_proxy(config, db):
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app

    client = create_app(Runtime(config.with_overrides(trusted_proxies=1), db)).test_client()
    proxied = {"REMOTE_ADDR": "127.0.0.1"}  # the proxy on the same box
    assert client.get("/metrics", environ_base=proxied, headers={"X-Forwarded-For": "198.51.100.4"}).status_code == 404
    assert client.get("/metrics", environ_base=proxied).status_code == 200


def test_api_calls_and_deliveries_move_their_metrics(services, client, alice):
    from jmapmono.intake.lmtp import DeliveryHandler, LazyServices

    before = scrape(client)
    alice.responses([["Core/echo", {}, "0"], ["Nope/get", {}, "1"]])
    handler = DeliveryHandler(LazyServices(lambda: services), executor=None)  # type: ignore[arg-type]
    assert handler.deliver(ALICE, b"Subject: hi\r\n\r\nbody\r\n", "127.0.0.1").startswith("250")
    assert handler.deliver("nobody@example.org", b"Subject: hi\r\n\r\nbody\r\n", "127.0.0.1").startswith("550")
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("jmapmono_api_method_duration_seconds_count", method="Core/echo") == 1
    assert moved("jmapmono_api_method_duration_seconds_count", method="unknown") == 1
    assert moved("jmapmono_deliveries_total", result="stored") == 1
    assert moved("jmapmono_deliveries_total", result="refused") == 1
    assert moved("jmapmono_delivery_duration_seconds_count") == 1
    assert sample(after, "jmapmono_outbox_pending_rows") >= 1  # no relay runs: the delivery's event waits


def test_websocket_gauge_and_push_latency(config, db):
    from jmapmono.web.app import create_app

    server = start_app(config, db)
    try:
        server.services.accounts.create_user(ALICE, PASSWORD)
        web = create_app(server.services).test_client()
        before = scrape(web)
        ws = server.client(ALICE)
        ws.enable_push(None)
        opened = scrape(web)
        assert sample(opened, "jmapmono_websockets_open") - sample(before, "jmapmono_websockets_open") == 1
        raw = b"From: carol@remote.example\r\nSubject: s\r\nMessage-ID: <lat@remote>\r\n\r\nHi.\r\n"
        server.services.mailboxes.deliver(ALICE, raw)
        ws.push()
        latency = "jmapmono_push_latency_seconds_count"
        pushed = scrape(web)  # the frame was taken before it was written: counted by the time it arrives
        # at least this push: on Postgres the relay may still push the account's creation after enable
        assert sample(pushed, latency, transport="websocket") >= sample(before, latency, transport="websocket") + 1
        assert sample(pushed, "jmapmono_pushes_sent_total", transport="websocket") > sample(
            before, "jmapmono_pushes_sent_total", transport="websocket"
        )
        assert sample(pushed, "jmapmono_relay_lag_seconds_count") > sample(before, "jmapmono_relay_lag_seconds_count")
        ws.close()
        wait_until(
            lambda: sample(scrape(web), "jmapmono_websockets_open") == sample(before, "jmapmono_websockets_open"),
            message="gauge back down",
        )
    finally:
        server.stop()


def test_metrics_on_a_real_server_refuse_a_non_loopback_client(config, db):
    import ipaddress

    server = start_app(config, db, metrics_allowed_networks=(ipaddress.ip_network("192.0.2.0/24"),))
    try:
        status, _, body = get(server.url + "/metrics")
        assert status == 404 and b"jmapmono_" not in body
    finally:
        server.stop()
    server = start_app(config, db)
    try:
        status, headers, body = get(server.url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert b"jmapmono_websockets_open" in body
    finally:
        server.stop()


def test_eventsource_gauge_and_push_latency(services, app, alice):
    from tests.support.eventsource_client import ALL, listening, stream_server

    web = app.test_client()
    before = scrape(web)
    with stream_server(services, app) as connect:
        stream = connect(ALL)
        stream.block()
        wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
        assert (
            sample(scrape(web), "jmapmono_eventsource_streams_open")
            == sample(before, "jmapmono_eventsource_streams_open") + 1
        )
        services.mailboxes.deliver(alice.email, b"Subject: es\r\nMessage-ID: <es@remote>\r\n\r\nHi.\r\n")
        stream.state()
        latency = "jmapmono_push_latency_seconds_count"
        wait_until(
            lambda: (
                sample(scrape(web), latency, transport="eventsource")
                == sample(before, latency, transport="eventsource") + 1
            ),
            message="the push observed once its frame was written",
        )
        stream.close()
        wait_until(
            lambda: (
                sample(scrape(web), "jmapmono_eventsource_streams_open")
                == sample(before, "jmapmono_eventsource_streams_open")
            ),
            message="the gauge back down",
        )
