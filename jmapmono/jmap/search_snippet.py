"""SearchSnippet/get (RFC 8621 §5): the subject and a piece of the body with the search's matches marked.

The terms come from the filter's ``text`` and ``subject`` conditions (for the subject) and ``text``
and ``body`` conditions (for the preview), outside any NOT; they match as in Email/query
(search.py): the subject by substring, the body by word prefix or phrase. Everything else is
HTML-escaped; a field without a match is null; the preview is at most 255 octets (UTF-8).
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.email_query import parse_filter
from jmapmono.jmap.method_args import arg_id_list, check_max_objects_in_get, parse_query, reject_unknown_arguments
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.search import Term, substring_spans, word_spans
from jmapmono.mailbox.search_query import snippet_sources
from jmapmono.mailbox.search_sql import AllOf, AnyOf, Cond, NoneOf, Text

log = logging.getLogger(__name__)

ARGUMENTS = frozenset({"accountId", "filter", "emailIds"})
#: RFC 8621 §5: the preview MUST NOT be bigger than 255 octets.
PREVIEW_OCTETS = 255
#: How much of the text before the first match the preview shows (characters).
_LEAD = 40
_ELLIPSIS = "..."


def terms_of(c: Cond | None, negated: bool = False) -> tuple[list[Term], list[Term]]:
    """(subject terms, body terms) of the conditions that must match (not under a NOT)."""
    subject: list[Term] = []
    body: list[Term] = []
    if isinstance(c, (AllOf, AnyOf, NoneOf)):
        for item in c.items:
            s, b = terms_of(item, negated or isinstance(c, NoneOf))
            subject += s
            body += b
    elif isinstance(c, Text) and not negated:
        if "subject" in c.fields:
            subject += c.terms
        if c.body:
            body += c.terms
    return subject, body


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def mark_all(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` HTML-escaped with every span wrapped in <mark></mark>."""
    out, pos = [], 0
    for start, end in spans:
        out.append(_escape(text[pos:start]))
        out.append("<mark>" + _escape(text[start:end]) + "</mark>")
        pos = end
    out.append(_escape(text[pos:]))
    return "".join(out)


def preview(text: str, spans: list[tuple[int, int]]) -> str:
    """The body around the first match, marked and escaped, within PREVIEW_OCTETS (ellipses where cut)."""
    first = spans[0][0]
    start = max(0, first - _LEAD)
    if start > 0:
        space = text.find(" ", start, first)
        start = space + 1 if space >= 0 else start
    out = [_ELLIPSIS] if start > 0 else []
    size = len(out[0]) if out else 0
    budget = PREVIEW_OCTETS - len(_ELLIPSIS)  # room for a closing ellipsis
    marked, k, i = False, 0, start
    while i < len(text):
        while k < len(spans) and spans[k][1] <= i:
            k += 1
        inside = k < len(spans) and spans[k][0] <= i
        char = " " if text[i] in "\r\n\t" else text[i]
        piece = ("</mark>" if marked and not inside else "") + ("<mark>" if inside and not marked else "")
        piece += _escape(char)
        cost = len(piece.encode()) + (len("</mark>") if inside else 0)
        if size + cost > budget:
            break
        out.append(piece)
        size += len(piece.encode())
        marked = inside
        i += 1
    if marked:
        out.append("</mark>")
    if i < len(text):
        out.append(_ELLIPSIS)
    return "".join(out)


@method("SearchSnippet/get", MAIL)
def search_snippet_get(inv: Invocation) -> dict[str, Any]:
    """Snippets for ``emailIds`` given the Email/query ``filter``; unknown ids in ``notFound``."""
    started = time.monotonic()
    reject_unknown_arguments(inv.args, ARGUMENTS)
    query = parse_query(inv)  # validates the filter's structure like Email/query
    condition = parse_filter(inv, query.filter)
    ids = arg_id_list(inv, "emailIds", nullable=False) or []
    check_max_objects_in_get(inv, len(ids))
    subject_terms, body_terms = terms_of(condition)
    sources = snippet_sources(inv.services.db, query.account_id, ids)
    shared = sharing.view(inv)
    if shared is not None:
        visible = inv.services.mailboxes.visible_messages(query.account_id, sources, shared.readable)
        sources = {i: v for i, v in sources.items() if i in visible}
    listed = []
    for email_id in ids:
        if email_id not in sources:
            continue
        subject, body = sources[email_id]
        subject_spans = substring_spans(subject, subject_terms) if subject and subject_terms else []
        languages = inv.services.config.search_languages
        body_spans = word_spans(body, body_terms, 16, languages) if body and body_terms else []
        listed.append(
            {
                "emailId": email_id,
                "subject": mark_all(subject, subject_spans) if subject and subject_spans else None,
                "preview": preview(body, body_spans) if body_spans else None,
            }
        )
    not_found = [i for i in ids if i not in sources]
    log.info(
        kv(
            event="search_snippets",
            user=inv.principal.email,
            account=query.account_id,
            emails=len(listed),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return {"accountId": query.account_id, "list": listed, "notFound": not_found or None}
