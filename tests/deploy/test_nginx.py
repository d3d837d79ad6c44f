"""Two ``serve`` nodes (Postgres, RabbitMQ) behind a real nginx that terminates TLS, configured by the shipped
conf/nginx/jmapmono.conf (tests/support/nginx.py): everything a client does goes through nginx over TLS, round
robin, no sticky sessions. The Session names the https:// URLs; a push reaches a WebSocket whatever node holds
it; an EventSource event arrives while its stream is open; a large upload passes; a forged X-Forwarded-For is
not believed."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.support import nginx as nginx_support
from tests.support.cluster import ALICE, PASSWORD, Cluster, email_state
from tests.support.eventsource_client import Stream
from tests.support.jmap import basic_auth
from tests.support.nginx import NginxServer, require_nginx
from tests.support.servers import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

pytestmark = pytest.mark.timeout(300)


@dataclass
class Deployment:
    nginx: NginxServer
    cluster: Cluster

    @property
    def nodes(self) -> list[ServeProcess]:
        return self.cluster.nodes

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.nginx.url + path, verify=str(self.nginx.cert), timeout=30, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
        return requests.post(url, verify=str(self.nginx.cert), timeout=60, **kwargs)

    def session(self) -> dict:
        response = self.get("/.well-known/jmap", auth=(ALICE, PASSWORD))
        assert response.status_code == 200, response.text
        return response.json()

    def logs(self) -> str:
        return "".join(node.stderr() for node in self.nodes)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    require_nginx()  # before the cluster starts Postgres and RabbitMQ
    cluster: Cluster = request.getfixturevalue("cluster")
    port = free_port()
    cluster.env.update(JMAPMONO_BASE_URL=f"https://127.0.0.1:{port}", JMAPMONO_TRUSTED_PROXIES="1")
    a, b = cluster.node(lmtp=True), cluster.node(lmtp=True)
    nginx = NginxServer([a.http_port, b.http_port], port)
    try:
        yield Deployment(nginx, cluster)
    finally:
        nginx.stop()


def test_the_session_names_the_https_urls_and_a_request_goes_through(deployment):
    session = deployment.session()
    base = deployment.nginx.url
    for name in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl"):
        assert session[name].startswith(base + "/"), (name, session[name])
    ws_url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
    assert ws_url == f"wss://127.0.0.1:{deployment.nginx.port}/jmap/ws"

    account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]}
    body["methodCalls"] = [["Mailbox/get", {"accountId": account, "properties": ["role"]}, "0"]]
    response = deployment.post(session["apiUrl"], json=body, auth=(ALICE, PASSWORD))
    assert response.status_code == 200, response.text
    [[name, result, _]] = response.json()["methodResponses"]
    assert name == "Mailbox/get" and "inbox" in {m["role"] for m in result["list"]}


def test_a_websocket_through_nginx_is_pushed_mail_delivered_to_the_other_node(deployment):
    # As a browser on the server's own origin opens it: Origin, permessage-deflate offered.
    origin = {"Origin": deployment.nginx.url}
    tls = deployment.nginx.ssl_context()
    client = WsClient(deployment.nginx.port, basic(ALICE, PASSWORD), headers=origin, deflate=True, tls=tls)
    assert client.subprotocol == "jmap"
    assert [extension.name for extension in client.extensions] == ["permessage-deflate"]
    client.enable_push(["Email"])
    [holder] = [node for node in deployment.nodes if "event=ws_open " in node.stderr()]
    [other] = [node for node in deployment.nodes if node is not holder]
    deployment.cluster.deliver(other)
    assert email_state(client.push(timeout=30, where=email_state))
    client.close()


def test_an_eventsource_event_through_nginx_arrives_while_the_stream_is_open(deployment):
    url = deployment.session()["eventSourceUrl"]
    path = url.removeprefix(deployment.nginx.url).format(types="*", closeafter="no", ping="0")
    stream = Stream(
        deployment.nginx.port, path, basic_auth(ALICE, PASSWORD), timeout=30, tls=deployment.nginx.ssl_context()
    )
    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    # The opening comment comes through before anything ends the response: nothing holds the stream back.
    opening = stream.chunk()
    assert opening is not None and opening.startswith(b":")
    [holder] = [node for node in deployment.nodes if "event=eventsource_open " in node.stderr()]
    deployment.cluster.deliver(next(node for node in deployment.nodes if node is not holder))
    received = ""
    while (state := state_event(received)) is None:
        chunk = stream.chunk()  # nginx may cut or join the node's chunks: events are read across them
        assert chunk is not None, f"the stream ended before a state event: {received!r}"
        received += chunk.decode()
    assert email_state(state) and not stream.ended
    stream.close()


def state_event(text: str) -> dict | None:
    """The data of the first whole ``state`` event in an event stream's ``text``, if any."""
    for block in text.split("\n\n")[:-1]:
        fields = dict(line.partition(": ")[::2] for line in block.split("\n"))
        if fields.get("event") == "state":
            return json.loads(fields["data"])
    return None


def test_an_upload_of_several_megabytes_goes_through_and_comes_back(deployment):
    session = deployment.session()
    account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    data = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB: beyond nginx's 1 MB default
    response = deployment.post(
        session["uploadUrl"].format(accountId=account),
        data=data,
        auth=(ALICE, PASSWORD),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["size"] == len(data)
    download = session["downloadUrl"].format(
        accountId=account, blobId=uploaded["blobId"], name="b.bin", type="application/octet-stream"
    )
    fetched = requests.get(download, auth=(ALICE, PASSWORD), verify=str(deployment.nginx.cert), timeout=60)
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).digest() == hashlib.sha256(data).digest()


def test_a_forged_x_forwarded_for_is_not_believed_through_nginx(deployment):
    forged = {"X-Forwarded-For": "203.0.113.9"}
    through = deployment.get("/jmap/session", auth=("through-nginx@example.org", "wrong"), headers=forged)
    assert through.status_code == 401
    direct = requests.get(
        deployment.nodes[0].url + "/jmap/session", auth=("direct@example.org", "wrong"), headers=forged, timeout=30
    )
    assert direct.status_code == 401

    def failed_from(user: str) -> str | None:
        match = re.search(rf"event=login_failed user={re.escape(user)} ip=(\S+)", deployment.logs())
        return match.group(1) if match else None

    # Straight to a node, the header is believed (the peer is taken for the proxy): the log shows what it says.
    assert wait_until(lambda: failed_from("direct@example.org"), 30, message="the direct failure logged") == (
        "203.0.113.9"
    )
    # Through nginx, the entry nginx appended is the one believed: the client's real address.
    assert wait_until(lambda: failed_from("through-nginx@example.org"), 30, message="the failure logged") == (
        "127.0.0.1"
    )


def test_without_nginx_the_tests_skip_but_fail_under_ci(monkeypatch):
    monkeypatch.setattr(nginx_support, "nginx_unavailable", lambda: "nginx is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and nginx is not installed"):
        require_nginx()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="nginx is not installed"):
        require_nginx()
