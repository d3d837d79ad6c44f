"""Helpers for the Email method tests: mailbox ids by role, uploads, downloads, Email/get, test messages."""

from __future__ import annotations

from tests.support.jmap import JmapClient

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
NOTES = b"line one\nline two\n\xc3\xa9t\xc3\xa9\n"  # LF-only UTF-8 text: must come back byte-exact


def roles(services, account: str) -> dict[str, str]:
    return {mb.role: mb.id for mb in services.mailboxes.get_mailboxes(account)[0] if mb.role}


def upload(client: JmapClient, data: bytes, media_type: str) -> str:
    r = client.client.post(
        f"/jmap/upload/{client.account_id}/", data=data, headers={**client.headers, "Content-Type": media_type}
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["blobId"]


def download(client: JmapClient, blob_id: str) -> bytes:
    r = client.client.get(f"/jmap/download/{client.account_id}/{blob_id}/f", headers=client.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_data()


def get(client: JmapClient, ids: list[str], properties: list[str], **extra) -> list[dict]:
    return client.call("Email/get", {"ids": ids, "properties": properties, **extra})["list"]


def message(subject: str, msgid: str, body: str = "hello\r\n") -> bytes:
    head = f"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
    return (head + "\r\n" + body).encode()


def create(client: JmapClient, obj: dict, **args) -> dict:
    """One create; returns the whole Email/set response."""
    return client.call("Email/set", {"create": {"k": obj}, **args})


def refused(client: JmapClient, obj: dict) -> dict:
    result = create(client, obj)
    assert result["created"] is None, result
    return result["notCreated"]["k"]
