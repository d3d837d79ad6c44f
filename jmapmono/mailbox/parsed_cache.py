"""Parsed raw messages kept in memory, so a message read again is not parsed (nor read from the store) again.

A blob id names its content (a SHA-256), so a parse never goes stale and needs no invalidation; who may
read it is decided before the cache is asked (the caller found the blob id on an email of the account).
The cache is bounded by an estimate of the memory it holds (the raw bytes plus the part tree: about
1.4 KB for a one-part message, 0.6 KB per further part, measured with tracemalloc), least recently used
out first. One per process, owned by the runtime; gevent runs one greenlet at a time, so no lock.
"""

from __future__ import annotations

from jmapmono.lru import SizedLRU
from jmapmono.mailbox.mime_tree import MimeMessage, parse_mime

#: The estimated bytes a parsed part holds beyond the raw message (rounded up from measurement).
PART_OVERHEAD = 2048


def footprint(message: MimeMessage) -> int:
    """What keeping ``message`` costs, estimated: its raw bytes and its parts."""
    return len(message.raw) + PART_OVERHEAD * len(message.walk())


class ParsedMessages(SizedLRU[str, MimeMessage]):
    """A least-recently-used map blob id → parsed message, under ``max_bytes`` (0: keep nothing)."""

    def parse(self, blob_id: str, raw: bytes) -> MimeMessage:
        """Parse ``raw`` (the content of ``blob_id``) and keep the result if it fits."""
        message = parse_mime(raw)
        self.put(blob_id, message, footprint(message))
        return message
