"""Body part blob ids (``<message blob id>_<partId>``, RFC 8621 §4.1.4) as readable blobs.

Parts are not stored on their own: a download, a ``Blob/copy``, an ``Email/parse`` or an attachment by
``blobId`` of such an id is answered by decoding the part out of the message it belongs to. The message
blob is read with the caller's access rights (the account must hold it, and another user's uploads stay
private), so a part is readable exactly when its message is. Nested ids (``…_9_2``: part 2 of the message
attached as part 9) are resolved level by level, at most ``email_body.MAX_NESTING`` deep, and only into
parts that are messages themselves (``message/rfc822``, ``message/global``).
"""

from __future__ import annotations

from jmapmono.jmap.email_body import MAX_NESTING, resolve_part_blob, split_part_blob_id
from jmapmono.mailbox.blobs import BlobContent, BlobStore, Resolver

#: The part types whose content is a message with parts of its own.
MESSAGE_TYPES = ("message/rfc822", "message/global")


def part_resolver(store: BlobStore) -> Resolver:
    """A :data:`~jmapmono.mailbox.blobs.Resolver` serving the decoded body parts of ``store``'s messages."""

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
            stored = store.read(account_id, base, user_id, resolve=False)
            if stored is not None:
                break
        # Then walk down: only an attached message has parts of its own.
        data, media_type, name = stored.data, MESSAGE_TYPES[0], None
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
