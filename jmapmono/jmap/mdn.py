"""Read receipts: ``MDN/send`` and ``MDN/parse`` (RFC 9007), capability ``urn:ietf:params:jmap:mdn``.

``MDN/send`` composes each MDN from an Email of the account and the chosen Identity (the wire format is
jmapmono/sending/mdn.py), sends it to the original's ``Disposition-Notification-To`` like a submission
(local users directly, others through the SMTP relay; not recorded as an EmailSubmission) and marks the
original ``$mdnsent``, so that a second receipt for it is refused with ``mdnAlreadySent`` (§3.1). Then
``onSuccessUpdateEmail`` runs as one implicit ``Email/set``, as for EmailSubmission/set.

``MDN/parse`` reads blobs of the account as MDNs; ``forEmailId`` is the Email of the account whose
Message-ID the MDN names, if there is one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formataddr
from typing import Any

from jmapmono.jmap import method_args as std
from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.identity import set_error
from jmapmono.jmap.registry import Invocation, capability, method
from jmapmono.jmap.submission import implicit_email_set
from jmapmono.log import kv
from jmapmono.mailbox.identities import Identity, may_send_as
from jmapmono.mailbox.model import MailboxError
from jmapmono.sending import mdn as wire

log = logging.getLogger("jmapmono.jmap")

MDN = "urn:ietf:params:jmap:mdn"
#: The keyword of an Email whose MDN was sent (RFC 9007 §1.2; keywords are compared case-insensitively).
MDN_SENT = "$mdnsent"
CLIENT_PROPERTIES = {
    "forEmailId",
    "subject",
    "textBody",
    "includeOriginalMessage",
    "reportingUA",
    "disposition",
    "finalRecipient",
    "extensionFields",
}
SERVER_SET = {"mdnGateway", "originalRecipient", "originalMessageId", "error"}
SEND_ARGUMENTS = {"accountId", "identityId", "send", "onSuccessUpdateEmail"}


def _empty(*_: Any) -> dict[str, Any]:
    return {}


capability(MDN, _empty, _empty)


def _string(obj: dict[str, Any], prop: str) -> str | None:
    value = obj.get(prop)
    if value is not None and not isinstance(value, str):
        raise wire.MdnInvalid(f"{prop} must be a string or null", [prop])
    return value


def _report(obj: dict[str, Any]) -> wire.Report:
    """The client's MDN object as a Report (server-set fields filled later); MdnInvalid when malformed."""
    unknown = sorted(set(obj) - CLIENT_PROPERTIES - SERVER_SET)
    if unknown:
        raise wire.MdnInvalid(f"unknown properties: {', '.join(unknown)}", unknown)
    given_server_set = sorted(p for p in SERVER_SET if obj.get(p) is not None)
    if given_server_set:
        raise wire.MdnInvalid(f"server-set properties: {', '.join(given_server_set)}", given_server_set)
    include = obj.get("includeOriginalMessage", False)
    if not isinstance(include, bool):
        raise wire.MdnInvalid("includeOriginalMessage must be true or false", ["includeOriginalMessage"])
    reporting_ua = _string(obj, "reportingUA")
    final = _string(obj, "finalRecipient")
    return wire.Report(
        disposition=wire.disposition_from_json(obj.get("disposition")),
        subject=_string(obj, "subject"),
        text_body=_string(obj, "textBody"),
        include_original_message=include,
        reporting_ua=None if reporting_ua is None else wire.one_line(reporting_ua, "reportingUA"),
        final_recipient=None if final is None else wire.one_line(final, "finalRecipient"),
        extension_fields=wire.check_extension_fields(obj.get("extensionFields")),
    )


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else " ".join(str(value).split())


def _send_one(inv: Invocation, account_id: str, identity: Identity, obj: Any) -> tuple[str, dict[str, Any]]:
    """Send one MDN; (forEmailId, the properties the client did not give). Raises SetError."""
    if not isinstance(obj, dict):
        raise SetError("invalidProperties", "an MDN must be an object")
    email_id = obj.get("forEmailId")
    if not isinstance(email_id, str) or not std.is_id(email_id):
        raise SetError("invalidProperties", "forEmailId must be the id of an Email", properties=["forEmailId"])
    try:
        report = _report(obj)
    except wire.MdnInvalid as e:
        raise SetError("invalidProperties", str(e), properties=e.properties) from None
    services = inv.services
    found, _ = services.mailboxes.get_messages(account_id, [email_id])
    message = found.get(email_id)
    raw = None if message is None else services.blobs.get(account_id, message.blob_id)
    if message is None or raw is None:
        raise SetError("notFound", f"no Email {email_id}")
    if MDN_SENT in {k.lower() for k in message.keywords}:
        raise SetError("mdnAlreadySent", f"Email {email_id} has the {MDN_SENT} keyword: its MDN was sent")
    original = BytesHeaderParser(policy=compat32).parsebytes(raw)
    to = wire.recipients(original)[: wire.MAX_RECIPIENTS]
    if not to:
        raise SetError("notFound", f"Email {email_id} asks for no MDN (it has no Disposition-Notification-To)")
    final = report.final_recipient or identity.email
    if not may_send_as(identity.email, final):
        raise SetError("forbiddenFrom", f"identity {identity.id} may not issue an MDN as {final}")
    original_recipient = _header(original, "Original-Recipient")
    if original_recipient is not None:
        kind, sep, address = original_recipient.partition(";")
        original_recipient = address.strip() if sep and kind.strip().lower() == "rfc822" else None
    filled = replace(
        report,
        final_recipient=final,
        original_recipient=original_recipient,
        original_message_id=_header(original, "Message-ID"),
    )
    sender = formataddr((identity.name, identity.email)) if identity.name else identity.email
    raw_mdn = wire.compose(original, raw, filled, sender, to, services.submissions.relay.helo)
    try:
        prepared = services.submissions.prepare_notification(account_id, identity, to, raw_mdn)
        services.submissions.send(prepared)
    except MailboxError as e:
        raise set_error(e) from None
    services.mailboxes.set_keywords(account_id, [email_id], add=[MDN_SENT])
    log.info(kv(event="mdn_sent", account=account_id, email=email_id, type=filled.disposition.type, recipients=len(to)))
    given = {"forEmailId", *obj}
    everything = {"forEmailId": email_id, **filled.to_json()}
    if obj.get("subject") is None:
        everything["subject"] = None  # the server chose the subject; null as the client sent it
    return email_id, {k: v for k, v in everything.items() if k not in given or k in SERVER_SET}


@method("MDN/send", MDN, writes=True)
def mdn_send(inv: Invocation) -> dict[str, Any]:
    """RFC 9007 §3.1."""
    std.reject_unknown_arguments(inv.args, SEND_ARGUMENTS)
    account_id = inv.account_id
    identity_id = inv.args.get("identityId")
    if not isinstance(identity_id, str):
        raise std.invalid("identityId must be the id of an Identity")
    inv.services.identities.ensure_default(account_id)
    identity = inv.services.identities.find(account_id, identity_id)
    if identity is None:
        raise MethodError("invalidArguments", f"no Identity {identity_id}")
    send = inv.args.get("send")
    if not isinstance(send, dict) or not send:
        raise std.invalid("send must map creation ids to MDN objects")
    if len(send) > inv.services.config.limits.max_objects_in_set:
        raise MethodError("requestTooLarge", f"at most {inv.services.config.limits.max_objects_in_set} MDNs a call")
    on_update = std.arg_object(inv.args, "onSuccessUpdateEmail", None) or {}
    for key, patch in on_update.items():
        if not isinstance(patch, dict) or not key.startswith("#"):
            raise std.invalid(f"onSuccessUpdateEmail[{key!r}] must be a PatchObject keyed by #creationId")
    sent: dict[str, dict[str, Any]] = {}
    emails: dict[str, str] = {}
    not_sent: dict[str, Any] = {}
    for cid, obj in send.items():
        try:
            emails[cid], sent[cid] = _send_one(inv, account_id, identity, obj)
        except SetError as e:
            not_sent[cid] = e.to_json()
    update = {emails[key[1:]]: patch for key, patch in on_update.items() if key[1:] in emails}
    implicit_email_set(inv, account_id, update, [])
    return {"accountId": account_id, "sent": sent or None, "notSent": not_sent or None}


@method("MDN/parse", MDN)
def mdn_parse(inv: Invocation) -> dict[str, Any]:
    """RFC 9007 §3.2."""
    std.reject_unknown_arguments(inv.args, {"accountId", "blobIds"})
    account_id = inv.account_id
    blob_ids = inv.args.get("blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise std.invalid("blobIds must be an array of blob ids")
    limit = inv.services.config.limits.max_objects_in_get
    if len(blob_ids) > limit:
        raise MethodError("requestTooLarge", f"{len(blob_ids)} blobs to parse; maxObjectsInGet is {limit}")
    parsed: dict[str, Any] = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(blob_ids):
        readable = std.is_id(blob_id) and sharing.blob_readable(inv.services, inv.principal, account_id, blob_id)
        content = inv.services.blobs.read(account_id, blob_id, inv.principal.user_id) if readable else None
        if content is None:
            not_found.append(blob_id)
            continue
        report = wire.parse(content.data)
        if report is None:
            not_parsable.append(blob_id)
            continue
        parsed[blob_id] = {"forEmailId": _email_with_message_id(inv, account_id, report.original_message_id)}
        parsed[blob_id].update(report.to_json())
    return {
        "accountId": account_id,
        "parsed": parsed or None,
        "notParsable": not_parsable or None,
        "notFound": not_found or None,
    }


def _email_with_message_id(inv: Invocation, account_id: str, message_id: str | None) -> str | None:
    """The Email of the account whose Message-ID is ``message_id`` (the newest if several), else None."""
    if not message_id:
        return None
    wanted = message_id.strip().strip("<>").strip()
    return inv.services.mailboxes.find_by_message_id(account_id, wanted) if wanted else None
