"""For the Email method tests: mailbox ids by role, uploads, downloads, Email/get, test messages, and
``Box``: an account to fill with ``mail(...)`` through the mailbox layer and to query over JMAP."""

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


def fetch_blob(client: JmapClient, blob_id: str, name: str = "f", type: str | None = None, account: str | None = None):
    """The download response, read whole and closed (as a server closes it: that frees the download slot)."""
    url = f"/jmap/download/{account or client.account_id}/{blob_id}/{name}"
    return client.client.get(url + (f"?type={type}" if type else ""), headers=client.headers, buffered=True)


def download(client: JmapClient, blob_id: str) -> bytes:
    r = fetch_blob(client, blob_id)
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


T0 = 1_704_103_200_000  # 2024-01-01T10:00:00Z
MINUTE = 60_000


def mail(
    subject: str = "Hello",
    *,
    frm: str = "Alice Sender <alice@example.com>",
    to: str = "Bob Receiver <bob@example.org>",
    cc: str | None = None,
    bcc: str | None = None,
    body: str = "Hello there",
    date: str = "Mon, 01 Jan 2024 10:00:00 +0000",
    msgid: str | None = None,
    reply_to: str | None = None,
    headers: tuple[str, ...] = (),
    attachment: bool = False,
) -> bytes:
    """A small message; ``attachment`` makes it multipart with a PDF."""
    head = [f"From: {frm}", f"To: {to}", f"Subject: {subject}", f"Date: {date}", *headers]
    head += [f"Cc: {cc}"] * bool(cc) + [f"Bcc: {bcc}"] * bool(bcc) + [f"Message-ID: <{msgid}>"] * bool(msgid)
    if reply_to:
        head += [f"In-Reply-To: <{reply_to}>", f"References: <{reply_to}>"]
    if attachment:
        head += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"']
        text = (
            f"--b1\r\nContent-Type: text/plain\r\n\r\n{body}\r\n--b1\r\nContent-Type: application/pdf\r\n"
            'Content-Disposition: attachment; filename="r.pdf"\r\n\r\n%PDF-1.4\r\n--b1--\r\n'
        )
    else:
        text = body + "\r\n"
    return ("\r\n".join(head) + "\r\n\r\n" + text).encode()


class Box:
    """Alice's account through the mailbox layer (data) and her JMAP client (queries)."""

    def __init__(self, services, client) -> None:
        self.services, self.client, self.account = services, client, client.account_id
        role = services.mailboxes.mailbox_by_role
        self.inbox, self.archive, self.trash = (role(self.account, r).id for r in ("inbox", "archive", "trash"))

    def add(self, raw: bytes | None = None, *, boxes=None, keywords=(), at: int | None = None, **kw) -> str:
        raw = raw or mail(**kw)
        return self.services.mailboxes.append(self.account, raw, boxes or [self.inbox], keywords, at).id

    def query(self, **args) -> dict:
        return self.client.call("Email/query", args)

    def ids(self, filter=None, sort=None, **args) -> list[str]:
        return self.query(filter=filter, sort=sort, **args)["ids"]

    def error(self, method: str = "Email/query", **args) -> str:
        return self.client.error(method, args)["type"]


def index_the_old_way(db, message_id: str) -> None:
    """Make a message's index row as releases before the tokenizer wrote it: the words alone, tokenizer 0."""
    from jmapmono.mailbox.search import tsvector

    with db.transaction() as tx:
        text = tx.value("SELECT text FROM message_search WHERE message_id = ?", (message_id,))
        if tx.dialect == "postgres":
            tx.execute(
                "UPDATE message_search SET search_vector = CAST(? AS tsvector), tokenizer = 0 WHERE message_id = ?",
                (tsvector(text), message_id),
            )
            return
        rowid = tx.value("SELECT id FROM message_search_rows WHERE message_id = ?", (message_id,))
        tx.execute("DELETE FROM message_search_terms WHERE rowid = ?", (rowid,))
        tx.execute("INSERT INTO message_search_fts (rowid, text) VALUES (?, ?)", (rowid, text))
        tx.execute("UPDATE message_search SET tokenizer = 0 WHERE message_id = ?", (message_id,))
