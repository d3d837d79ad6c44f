"""The mail capabilities (RFC 8621 §1.3) with their per-account limits.

Declared in one place so the Session is complete whichever data-type modules
are loaded; the modules register their methods under these URIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jmapmono.jmap.registry import MAIL, MAIL_SHARE, QUOTA, SIEVE, SUBMISSION, VACATION, capability
from jmapmono.mailbox.sieve.compile import EXTENSIONS as SIEVE_EXTENSIONS

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.accounts.users import AccountAccess
    from jmapmono.jmap.context import JmapServices

#: Email/query sort properties we support (RFC 8621 §4.4.2).
EMAIL_SORT_OPTIONS = [
    "receivedAt",
    "sentAt",
    "size",
    "from",
    "to",
    "subject",
    "hasKeyword",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
]
MAX_MAILBOX_DEPTH = 10
MAX_SIZE_MAILBOX_NAME = 255


def _mail_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    return {
        "maxMailboxesPerEmail": None,
        "maxMailboxDepth": MAX_MAILBOX_DEPTH,
        "maxSizeMailboxName": MAX_SIZE_MAILBOX_NAME,
        "maxSizeAttachmentsPerEmail": services.config.max_message_size,
        "emailQuerySortOptions": EMAIL_SORT_OPTIONS,
        "mayCreateTopLevelMailbox": True,
    }


def _mail_account_for(
    services: JmapServices, account_id: str, principal: Principal, access: AccountAccess
) -> dict[str, Any]:
    """A sharee creates mailboxes only as children of shared ones (with mayCreateChild)."""
    return {**_mail_account(services, account_id), "mayCreateTopLevelMailbox": access.shares is None}


def _submission_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    return {"maxDelayedSend": 0, "submissionExtensions": {}}


def _sieve_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    """RFC 9661 §1.2.1: the limits of the account's scripts and what they may use."""
    limits = services.mailboxes.sieve.limits
    return {
        "maxSizeScriptName": limits.max_name_size,
        "maxSizeScript": limits.max_script_size,
        "maxNumberScripts": limits.max_scripts,
        "maxNumberRedirects": limits.max_redirects,
        "sieveExtensions": list(SIEVE_EXTENSIONS),
        "notificationMethods": None,
        "externalLists": None,
        "implementation": "jmapmono",
    }


def _empty_session(services: JmapServices) -> dict[str, Any]:
    return {}


def _empty_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    return {}


capability(MAIL, _empty_session, _mail_account, user_account_value=_mail_account_for)
capability(SUBMISSION, _empty_session, _submission_account)
capability(VACATION, _empty_session, _empty_account)
capability(QUOTA, _empty_session, _empty_account)
capability(SIEVE, _empty_session, _sieve_account)
capability(MAIL_SHARE, _empty_session, _empty_account)
