"""``Blob/copy`` (RFC 8620 §6.3): copy blobs between two accounts without a download and re-upload.

The copy is held in the target account like an upload by the calling user
(readable by that user only, collected after the upload TTL unless something
references it). Copying within one account is refused with invalidArguments.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError, SetError, invalid_arguments
from jmapmono.jmap.method_args import reject_unknown_arguments
from jmapmono.jmap.registry import CORE, Invocation, method
from jmapmono.log import kv

log = logging.getLogger(__name__)

#: The SetError type for a blob id that is unknown or not readable in the source account.
NOT_FOUND = "notFound"  # RFC 8620 §6.3


@method("Blob/copy", CORE, needs_account=True, writes=True)
def blob_copy(inv: Invocation) -> dict[str, Any]:
    """Copy ``blobIds`` from ``fromAccountId`` into ``accountId``: ``copied`` {old id: new id}, ``notCopied``."""
    started = time.monotonic()
    args = inv.args
    reject_unknown_arguments(args, ("fromAccountId", "accountId", "blobIds"))
    services = inv.services
    user_id = inv.principal.user_id
    to_account = args.get("accountId")
    from_account = args.get("fromAccountId")
    blob_ids = args.get("blobIds")
    if not isinstance(to_account, str):
        raise invalid_arguments("accountId must be an account id")
    if not isinstance(from_account, str):
        raise invalid_arguments("fromAccountId must be an account id")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise invalid_arguments("blobIds must be a list of blob ids")
    if from_account == to_account:
        raise invalid_arguments("fromAccountId and accountId must differ: Blob/copy copies between accounts")
    if len(blob_ids) > services.config.limits.max_objects_in_set:
        raise MethodError("requestTooLarge", f"at most {services.config.limits.max_objects_in_set} blobIds")
    # The request processor checks the target account first; checked again so the handler is safe on its own.
    target = services.accounts.access(user_id, to_account)
    if target is None:
        raise MethodError("accountNotFound")
    if target.is_read_only:
        raise MethodError("accountReadOnly")
    if services.accounts.access(user_id, from_account) is None:
        raise MethodError("fromAccountNotFound")
    wanted = [inv.resolve_id(b) for b in blob_ids]
    hidden = [b for b in wanted if not sharing.blob_readable(services, inv.principal, from_account, b)]
    copied, missing = services.blobs.copy(from_account, to_account, user_id, [b for b in wanted if b not in hidden])
    missing = [*missing, *hidden]
    not_copied = {
        blob_id: SetError(NOT_FOUND, f"blob {blob_id} not found in account {from_account}").to_json()
        for blob_id in missing
    }
    log.info(
        kv(
            event="blob_copy",
            user=inv.principal.email,
            from_account=from_account,
            account=to_account,
            copied=len(copied),
            not_copied=len(not_copied),
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    return {
        "fromAccountId": from_account,
        "accountId": to_account,
        "copied": copied or None,
        "notCopied": not_copied or None,
    }
