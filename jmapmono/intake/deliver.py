"""The ``deliver`` agent's intake: reading the message an MTA pipes in (the command is jmapmono/cli/mail.py).

The message is stored byte for byte, with one exception: input that has no CRLF at all (an MTA pipe
hands over Unix LF line endings) has each LF turned into CRLF, the line ending of RFC 5322 that JMAP
clients see.
"""

from __future__ import annotations

from typing import BinaryIO

_READ_CHUNK = 1 << 16
#: Longest reject reason quoted in a reply (characters).
MAX_REASON = 200


def read_message(stream: BinaryIO, limit: int) -> bytes | None:
    """Read ``stream`` to its end; the bytes, or None when over ``limit`` (the rest is read and dropped)."""
    data = stream.read(limit + 1)
    if len(data) <= limit:
        return data
    while stream.read(_READ_CHUNK):  # let the MTA finish writing: no broken pipe on its side
        pass
    return None


def to_crlf(raw: bytes) -> bytes:
    """LF line endings to CRLF when the input has no CRLF at all; otherwise the bytes unchanged."""
    if b"\r\n" in raw or b"\n" not in raw:
        return raw
    return raw.replace(b"\n", b"\r\n")


def reply_text(reason: str) -> str:
    """A Sieve reject reason as one line of printable ASCII, for an LMTP reply or the ``deliver`` message
    (RFC 5429 §2.1.1: the refusal in the protocol's own terms)."""
    text = " ".join(reason.split())
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:MAX_REASON]
    return text or "rejected by the recipient's filter"
