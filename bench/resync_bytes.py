"""Bytes of a client's resync after one new mail: ``Email/changes`` + ``Email/get`` of what was created,
``Mailbox/changes`` + ``Mailbox/get`` of what changed, in one request as a mail client sends it.

A real ``python -m jmapmono serve`` (SQLite) holds one user with 20 delivered messages; the client reads
its states, one more message is delivered over LMTP, then the client resyncs. ``Email/get`` asks for the
properties of a message list (what a client shows for a new mail); ``Mailbox/get`` asks, by result
reference, for the ``updatedProperties`` of ``Mailbox/changes`` (RFC 8621 §2.2: only the counts changed),
as a client does; then the same with the default properties of both (a client that names none).
Prints the JSON bytes of the request and of the response (as the server sends them over
HTTP; no compression).

    .venv/bin/python bench/resync_bytes.py
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import json  # noqa: E402
import sys  # noqa: E402

import common  # noqa: E402
from common import HttpClient, LMTPClient, basic, lmtp_deliver, message, method_result  # noqa: E402

USER = "alice@example.org"
LIST_PROPERTIES = [
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "from",
    "to",
    "subject",
    "preview",
    "hasAttachment",
]


def resync_calls(account: str, email_state: str, mailbox_state: str, typical: bool = True) -> list:
    """The four calls; ``typical`` False: default properties for both gets (what a naive client asks)."""
    calls = [
        ["Email/changes", {"accountId": account, "sinceState": email_state}, "0"],
        [
            "Email/get",
            {
                "accountId": account,
                "#ids": {"resultOf": "0", "name": "Email/changes", "path": "/created"},
                "properties": LIST_PROPERTIES,
            },
            "1",
        ],
        ["Mailbox/changes", {"accountId": account, "sinceState": mailbox_state}, "2"],
        [
            "Mailbox/get",
            {
                "accountId": account,
                "#ids": {"resultOf": "2", "name": "Mailbox/changes", "path": "/updated"},
                "#properties": {"resultOf": "2", "name": "Mailbox/changes", "path": "/updatedProperties"},
            },
            "3",
        ],
    ]
    if not typical:
        del calls[1][1]["properties"], calls[3][1]["#properties"]
    return calls


def measure(figures: common.Figures, http: HttpClient, lmtp_port: int, typical: bool) -> None:
    account = common.account_id(http)
    email_state = method_result(http.jmap([["Email/get", {"accountId": account, "ids": []}, "0"]]))["state"]
    mailbox_state = method_result(http.jmap([["Mailbox/get", {"accountId": account, "ids": []}, "0"]]))["state"]
    client = LMTPClient("127.0.0.1", lmtp_port)
    client.lhlo()
    lmtp_deliver(client, USER, message(1000, USER, 4000, subject="Lunch on Thursday?"))
    client.quit()
    body = json.dumps(
        {"using": common.USING, "methodCalls": resync_calls(account, email_state, mailbox_state, typical)}
    )
    status, data = http.request("POST", "/jmap/api", body.encode())
    if status != 200:
        raise RuntimeError(f"resync answered {status}: {data[:300]!r}")
    response = json.loads(data)
    created = method_result(response, 1)["list"]
    if len(created) != 1:
        raise RuntimeError(f"the resync found {len(created)} new emails, expected 1")
    case = "list properties, updatedProperties" if typical else "default properties (all)"
    figures.value(f"resync after one new mail, {case}", len(data), "B", note=f"request {len(body)} B")
    print(json.dumps(response, indent=1)[:4000] if "--show" in sys.argv else "", end="")


def main(argv: list[str]) -> None:
    common.banner("JSON bytes of a resync after one new mail (Email + Mailbox changes and get)")
    figures = common.Figures("resync_bytes")
    with common.temp_dir() as work:
        env = common.jmapmono_env(common.database_url("sqlite", work), work / "data")
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            client = LMTPClient("127.0.0.1", server.lmtp_port)
            client.lhlo()
            for n in range(20):
                lmtp_deliver(client, USER, message(n, USER, 4000))
            client.quit()
            http = HttpClient(server.http_port, basic(USER))
            measure(figures, http, server.lmtp_port, typical=True)
            measure(figures, http, server.lmtp_port, typical=False)
            http.close()


if __name__ == "__main__":
    main(sys.argv[1:])
