"""Email objects already rendered, kept in memory so that an email read again is not rendered again.

An email never changes but for its ``keywords`` and ``mailboxIds`` (RFC 8621 §4.1.1: the rest is fixed
once it exists), so what ``Email/get`` rendered of the other properties is kept under the email's id, its
blob id and thread id, and what was asked (properties, body properties, fetch arguments): a later read with
the same arguments takes it as it is and adds the two mutable properties from the row it just read. Who
may read an email is decided before the cache is asked (the caller read the email from the account).

Bounded by an estimate of the memory it holds (3 KB plus twice the JSON text per entry, measured with
tracemalloc on rendered emails: 5.5 KB for a 1.2 KB JSON object, 9 KB for a 4.3 KB one), least recently
used out first. One per process, owned by the runtime; gevent runs one greenlet at a time, so no lock.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from jmapmono.lru import SizedLRU

#: The properties of an Email that change after it exists: never kept, always read from its row.
MUTABLE = frozenset({"keywords", "mailboxIds"})
#: What an entry holds beyond twice its JSON text (rounded up from measurement).
ENTRY_OVERHEAD = 3072


def footprint(record: dict[str, Any]) -> int:
    """What keeping ``record`` costs, estimated."""
    return ENTRY_OVERHEAD + 2 * len(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


class RenderedEmails(SizedLRU[Hashable, dict[str, Any]]):
    """A least-recently-used map (email id, blob id, thread id, what was asked) → the rendered immutable
    properties (never to be changed by a caller), under ``max_bytes`` (0: keep nothing)."""

    def keep(self, key: Hashable, record: dict[str, Any]) -> dict[str, Any]:
        """Keep the immutable properties of ``record`` if they fit; return them."""
        kept = {k: v for k, v in record.items() if k not in MUTABLE}
        if self.max_bytes:
            self.put(key, kept, footprint(kept))
        return kept
