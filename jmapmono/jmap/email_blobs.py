"""Body part blob ids (``<message blob id>_<partId>``, RFC 8621 §4.1.4) as readable blobs.

Parts are not stored on their own: a download, a ``Blob/copy``, an ``Email/parse`` or an attachment by
``blobId`` of such an id is answered by decoding the part out of the message it belongs to. The message
blob is read with the caller's access rights (the account must hold it, and another user's uploads stay
private), so a part is readable exactly when its message is. Nested ids (``…_9_2``: part 2 of the message
attached as part 9) are resolved level by level, at most ``email_body.MAX_NESTING`` deep, and only into
parts that are messages themselves (``message/rfc822``, ``message/global``).

Where each part lies in its message is kept for recently used messages (:class:`PartIndex`), so that
serving another part of the same message reads only that part's octets instead of parsing the whole
message again; message blob ids are content addresses, so an entry never goes stale.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from jmapmono.jmap.email_body import MAX_NESTING, resolve_part_blob, split_part_blob_id
from jmapmono.mailbox.blobs import BlobContent, BlobStore, Resolver
from jmapmono.mailbox.mime_tree import decode_transfer, parse_mime

#: The part types whose content is a message with parts of its own.
MESSAGE_TYPES = ("message/rfc822", "message/global")
#: Part locations kept, in all (a message has at most 2,000 parts): ~2 MB at most.
INDEX_MAX_PARTS = 20_000


@dataclass(frozen=True, slots=True)
class PartLocation:
    """Where a leaf part's encoded body lies in its message, and how to decode it."""

    start: int
    end: int
    cte: str
    type: str
    name: str | None


class PartIndex:
    """The part locations of recently read messages, by message blob id, least recently used out first."""

    def __init__(self, max_parts: int = INDEX_MAX_PARTS) -> None:
        self.max_parts = max_parts
        self._tables: OrderedDict[str, dict[str, PartLocation]] = OrderedDict()
        self._parts = 0

    def get(self, blob_id: str) -> dict[str, PartLocation] | None:
        table = self._tables.get(blob_id)
        if table is not None:
            self._tables.move_to_end(blob_id)
        return table

    def put(self, blob_id: str, table: dict[str, PartLocation]) -> None:
        if blob_id in self._tables or len(table) > self.max_parts:
            return
        self._tables[blob_id] = table
        self._parts += len(table)
        while self._parts > self.max_parts:
            _, evicted = self._tables.popitem(last=False)
            self._parts -= len(evicted)

    def __len__(self) -> int:
        return len(self._tables)


def locate_parts(raw: bytes) -> dict[str, PartLocation]:
    """Every leaf part of message ``raw`` by part id (one parse)."""
    message = parse_mime(raw)
    return {
        part_id: PartLocation(part.body_start, part.body_end, part.cte, part.type, part.name)
        for part_id, part in message.leaves.items()
    }


def part_resolver(store: BlobStore, index: PartIndex | None = None) -> Resolver:
    """A :data:`~jmapmono.mailbox.blobs.Resolver` serving the decoded body parts of ``store``'s messages."""
    parts = PartIndex() if index is None else index

    def resolve(account_id: str, blob_id: str, user_id: int | None) -> BlobContent | None:
        # Peel part ids off the right until a stored blob the caller may read is found.
        chain: list[str] = []
        base = blob_id
        while True:
            split = split_part_blob_id(base)
            if split is None or len(chain) > MAX_NESTING:
                return None
            base, part_id = split
            chain.append(part_id)
            if store.lookup(account_id, base, user_id) is not None:
                break
        table = parts.get(base)
        if table is None:
            stored = store.read(account_id, base, user_id, resolve=False)
            if stored is None:
                return None
            table = locate_parts(stored.data)
            parts.put(base, table)
        location = table.get(chain.pop())
        if location is None:
            return None
        encoded = store.read_range(base, location.start, location.end - location.start)
        if encoded is None:
            return None
        data = decode_transfer(encoded, location.cte)[0]
        media_type, name = location.type, location.name
        # Then walk down: only an attached message has parts of its own.
        for part_id in reversed(chain):
            found = resolve_part_blob(data, part_id) if media_type in MESSAGE_TYPES else None
            if found is None:
                return None
            data, media_type, name = found
        return BlobContent(blob_id, data, media_type, name)

    resolve.is_part_resolver = True  # type: ignore[attr-defined]  # a marker on the function object
    return resolve


def install_part_resolver(store: BlobStore) -> None:
    """Let ``store`` serve body part blob ids (once, however often this is called)."""
    if not any(getattr(r, "is_part_resolver", False) for r in store.resolvers):
        store.resolvers.append(part_resolver(store))
