"""Thread/get and Thread/changes (RFC 8621 §3).

A thread's ``emailIds`` are sorted by receivedAt, oldest first, ties broken by email id (stable). Thread ids
never change, so a thread whose last email is destroyed is reported destroyed by Thread/changes.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.mailbox import changes_since
from jmapmono.jmap.method_args import get_response, parse_get, reject_unknown_arguments
from jmapmono.jmap.registry import MAIL, Invocation, method

PROPERTIES = ["id", "emailIds"]


@method("Thread/get", MAIL)
def thread_get(inv: Invocation) -> dict[str, Any]:
    """Threads by id; ``ids: null`` returns every thread when there are no more than maxObjectsInGet."""
    reject_unknown_arguments(inv.args, {"accountId", "ids", "properties"})
    get = parse_get(inv, PROPERTIES)
    mgr = inv.services.mailboxes
    if get.ids is None:
        limit = inv.services.config.limits.max_objects_in_get
        threads, state = mgr.get_all_threads(get.account_id, limit)
        if threads is None:
            raise MethodError("requestTooLarge", f"the account has more than maxObjectsInGet ({limit}) threads")
    else:
        threads, state = mgr.get_threads(get.account_id, get.ids)
    shared = sharing.view(inv)
    if shared is not None:  # a sharee sees the visible emails of a thread, and no thread without one
        every = [i for ids in threads.values() for i in ids]
        visible = mgr.visible_messages(get.account_id, every, shared.readable)
        threads = {t: [i for i in ids if i in visible] for t, ids in threads.items()}
        threads = {t: ids for t, ids in threads.items() if ids}
    return get_response(get, state, {t: {"id": t, "emailIds": ids} for t, ids in threads.items()})


@method("Thread/changes", MAIL)
def thread_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /changes over the Thread change log."""
    response = changes_since(inv, "Thread")[0]
    return sharing.changes_as_seen(inv, response, inv.services.mailboxes.visible_threads)
