"""The core capability (RFC 8620 §2) and ``Core/echo`` (§4).

The core capability carries the server-wide limits; it is not an account
capability (RFC 8620 §2: ``urn:ietf:params:jmap:core`` SHOULD NOT be in
``primaryAccounts``), so methods registered under it are usable with any
account the user can see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jmapmono.jmap.registry import CORE, Invocation, capability, method

if TYPE_CHECKING:
    from jmapmono.config import Limits
    from jmapmono.jmap.context import JmapServices


def core_capability_value(limits: Limits) -> dict[str, Any]:
    """The eight limits of ``urn:ietf:params:jmap:core``, from the configuration."""
    return {
        "maxSizeUpload": limits.max_size_upload,
        "maxConcurrentUpload": limits.max_concurrent_upload,
        "maxSizeRequest": limits.max_size_request,
        "maxConcurrentRequests": limits.max_concurrent_requests,
        "maxCallsInRequest": limits.max_calls_in_request,
        "maxObjectsInGet": limits.max_objects_in_get,
        "maxObjectsInSet": limits.max_objects_in_set,
        "collationAlgorithms": list(limits.collation_algorithms),
    }


def _session_value(services: JmapServices) -> dict[str, Any]:
    return core_capability_value(services.config.limits)


capability(CORE, _session_value, account_value=None, primary=False)


@method("Core/echo", CORE, needs_account=False)
def echo(inv: Invocation) -> dict[str, Any]:
    """Return the arguments unchanged: lets a client test the connection (RFC 8620 §4)."""
    return inv.args
