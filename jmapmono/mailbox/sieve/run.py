"""Running a compiled script against one incoming message: what to do with it (RFC 5228 §4, §5).

:func:`load` turns the stored compiled form into closures once (tests with their keys folded and their
``:matches`` patterns compiled); :meth:`Program.run` evaluates them against a :class:`Message` whose header
fields are read only when a test asks. The result is an :class:`Outcome`: where the message goes, with
which keywords, where it is redirected, whether it is rejected, the vacation reply. Nothing here touches
the store or the network: the MailboxManager and the sending layer carry the outcome out.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmapmono.mailbox.mime_addresses import addresses
from jmapmono.mailbox.mime_fields import text_form
from jmapmono.mailbox.model import MailboxError, normalize_keyword

_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
#: IMAP system flags as JMAP keywords (RFC 8621 §4.1.1); ``\Deleted`` and ``\Recent`` have none.
_SYSTEM_FLAGS = {"\\seen": "$seen", "\\flagged": "$flagged", "\\answered": "$answered", "\\draft": "$draft"}


class SieveRuntimeError(Exception):
    """The script failed while running (RFC 5228 §2.10.6): the message is kept in the Inbox."""


@dataclass(frozen=True)
class Target:
    """A mailbox the message is filed into: ``mailbox`` None is the Inbox (keep)."""

    mailbox: str | None
    keywords: frozenset[str]
    create: bool = False


@dataclass
class Outcome:
    targets: list[Target] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)
    #: The reason of reject/ereject (RFC 5429): the delivery is refused.
    reject: str | None = None
    #: The vacation action's parameters (RFC 5230 §4), when one ran.
    vacation: dict[str, Any] | None = None
    #: Why the script failed; the targets are then the Inbox alone.
    error: str | None = None

    @property
    def discarded(self) -> bool:
        """Nothing is stored: no keep, no fileinto (discard, or redirect without :copy)."""
        return not self.targets and self.reject is None


class Message:
    """What the tests read of one message: its header fields (parsed on first use), size and envelope."""

    def __init__(self, raw: bytes, recipient: str, envelope_from: str | None = None) -> None:
        self.raw = raw
        self.size = len(raw)
        self.recipient = recipient
        self._fields: dict[str, list[bytes]] | None = None
        self._texts: dict[str, list[str]] = {}
        self._emails: dict[str, list[str]] = {}
        self._from = envelope_from

    def fields(self) -> dict[str, list[bytes]]:
        if self._fields is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                end = self.raw.find(b"\n\n")
            head = self.raw if end < 0 else self.raw[:end]
            out: dict[str, list[bytes]] = {}
            last: list[bytes] | None = None
            for line in head.split(b"\n"):
                if line[:1] in (b" ", b"\t") and last is not None:
                    last[-1] += b"\n" + line
                    continue
                name, colon, value = line.partition(b":")
                if not colon:
                    last = None
                    continue
                last = out.setdefault(name.strip().decode("ascii", "replace").lower(), [])
                last.append(value)
            self._fields = out
        return self._fields

    def texts(self, name: str) -> list[str]:
        """The decoded values of the header field ``name`` (RFC 5228 §2.7.2: encoded words decoded)."""
        found = self._texts.get(name)
        if found is None:
            found = [text_form(v.rstrip(b"\r")).strip() for v in self.fields().get(name, ())]
            self._texts[name] = found
        return found

    def emails(self, name: str) -> list[str]:
        """The addresses in the header field ``name`` (RFC 5228 §5.1: the address test's values)."""
        found = self._emails.get(name)
        if found is None:
            found = [a["email"] for v in self.fields().get(name, ()) for a in addresses(v) if a.get("email")]
            self._emails[name] = found
        return found

    def envelope(self, part: str) -> list[str]:
        if part == "to":
            return [self.recipient]
        if self._from is None:
            paths = self.fields().get("return-path")
            found = addresses(paths[0]) if paths else []
            self._from = found[0]["email"] if found and found[0].get("email") else ""
        return [self._from]


# --- tests --------------------------------------------------------------------------------------------------------

Test = Callable[[Message], bool]


def _matches_pattern(key: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            out.append(re.escape(key[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


def _matcher(match: str, comparator: str, keys: list[str]) -> Callable[[str], bool]:
    fold = comparator == "i;ascii-casemap"
    folded = [k.translate(_FOLD) for k in keys] if fold else list(keys)
    if match == "is":
        wanted = frozenset(folded)
        return (lambda v: v.translate(_FOLD) in wanted) if fold else (lambda v: v in wanted)
    if match == "contains":
        if fold:
            return lambda v: any(k in v.translate(_FOLD) for k in folded)
        return lambda v: any(k in v for k in folded)
    patterns = [_matches_pattern(k) for k in folded]
    if fold:
        return lambda v: any(p.fullmatch(v.translate(_FOLD)) for p in patterns)
    return lambda v: any(p.fullmatch(v) for p in patterns)


def _part(email: str, part: str) -> str:
    if part == "all":
        return email
    local, at, domain = email.rpartition("@")
    if not at:
        return email if part == "localpart" else ""
    return local if part == "localpart" else domain


def _test(t: list[Any]) -> Test:
    kind = t[0]
    if kind == "true":
        return lambda m: True
    if kind == "false":
        return lambda m: False
    if kind == "not":
        inner = _test(t[1])
        return lambda m: not inner(m)
    if kind in ("allof", "anyof"):
        tests = [_test(x) for x in t[1]]
        if kind == "allof":
            return lambda m: all(x(m) for x in tests)
        return lambda m: any(x(m) for x in tests)
    if kind == "exists":
        names = t[1]
        return lambda m: all(n in m.fields() for n in names)
    if kind == "size":
        limit = int(t[2])
        return (lambda m: m.size > limit) if t[1] == "over" else (lambda m: m.size < limit)
    if kind == "header":
        _, match, comparator, names, keys = t
        ok = _matcher(match, comparator, keys)
        return lambda m: any(ok(v) for n in names for v in m.texts(n))
    _, part, match, comparator, names, keys = t
    ok = _matcher(match, comparator, keys)
    if kind == "envelope":
        return lambda m: any(ok(_part(v, part)) for n in names for v in m.envelope(n))
    return lambda m: any(ok(_part(v, part)) for n in names for v in m.emails(n))


# --- commands -----------------------------------------------------------------------------------------------------


def _flag_words(values: list[str]) -> list[str]:
    """imap4flags (RFC 5232 §3): each string may hold several flags separated by spaces."""
    out: dict[str, str] = {}
    for value in values:
        for word in value.split():
            out.setdefault(word.lower(), word)
    return list(out.values())


def keywords_of(flags: list[str]) -> frozenset[str]:
    """The JMAP keywords for IMAP flags: system flags mapped, others lower-cased, unusable ones left out."""
    out = set()
    for flag in flags:
        mapped = _SYSTEM_FLAGS.get(flag.lower())
        if mapped is None and not flag.startswith("\\"):
            try:
                mapped = normalize_keyword(flag)
            except MailboxError:
                continue
        if mapped is not None:
            out.add(mapped)
    return frozenset(out)


class _Stop(Exception):
    pass


def _commands(items: list[list[Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for c in items:
        if c[0] == "if":
            branches = [(_test(t), _commands(block)) for t, block in c[1]]
            out.append(("if", branches, _commands(c[2]) if c[2] is not None else None))
        else:
            out.append(tuple(c))
    return out


class _Execution:
    def __init__(self, max_redirects: int) -> None:
        self.max_redirects = max_redirects
        self.flags: list[str] = []
        self.implicit_keep = True
        self.targets: dict[str | None, Target] = {}
        self.outcome = Outcome()

    def file(self, mailbox: str | None, flags: list[str] | None, create: bool = False) -> None:
        words = _flag_words(flags) if flags is not None else self.flags
        key = None if mailbox is None or mailbox.upper() == "INBOX" else mailbox
        previous = self.targets.get(key)
        keywords = keywords_of(words) | (previous.keywords if previous else frozenset())
        self.targets[key] = Target(key, keywords, create or bool(previous and previous.create))

    def block(self, commands: list[tuple[Any, ...]], m: Message) -> None:
        for c in commands:
            kind = c[0]
            if kind == "if":
                for test, body in c[1]:
                    if test(m):
                        self.block(body, m)
                        break
                else:
                    if c[2] is not None:
                        self.block(c[2], m)
            elif kind == "stop":
                raise _Stop
            elif kind == "keep":
                self.file(None, c[1])
                self.implicit_keep = False
            elif kind == "discard":
                self.implicit_keep = False
            elif kind == "fileinto":
                _, mailbox, flags, create, copy = c
                self.file(mailbox, flags, create)
                self.implicit_keep = self.implicit_keep and copy
            elif kind == "redirect":
                _, address, copy = c
                if address.lower() not in (a.lower() for a in self.outcome.redirects):
                    if len(self.outcome.redirects) >= self.max_redirects:
                        raise SieveRuntimeError(f"more than {self.max_redirects} redirects")
                    self.outcome.redirects.append(address)
                self.implicit_keep = self.implicit_keep and copy
            elif kind == "reject":
                if self.outcome.reject is not None:
                    raise SieveRuntimeError("reject twice")
                self.outcome.reject = c[1] or "rejected by the recipient's filter"
                self.implicit_keep = False
            elif kind == "flags":
                words = _flag_words(c[2])
                if c[1] == "setflag":
                    self.flags = words
                elif c[1] == "addflag":
                    self.flags = _flag_words(self.flags + words)
                else:
                    gone = {w.lower() for w in words}
                    self.flags = [f for f in self.flags if f.lower() not in gone]
            elif kind == "vacation":
                if self.outcome.vacation is not None:
                    raise SieveRuntimeError("vacation twice")
                self.outcome.vacation = dict(c[1])

    def finish(self) -> Outcome:
        o = self.outcome
        if o.reject is not None and (self.targets or o.redirects or o.vacation is not None):
            raise SieveRuntimeError("reject cannot be combined with keep, fileinto, redirect or vacation")
        if self.implicit_keep and o.reject is None:
            self.file(None, None)
        o.targets = list(self.targets.values())
        return o


@dataclass
class Program:
    """A loaded script, ready to run against any number of messages."""

    commands: list[tuple[Any, ...]]

    def run(self, message: Message, max_redirects: int) -> Outcome:
        """The outcome for ``message``; SieveRuntimeError when the script fails."""
        execution = _Execution(max_redirects)
        try:
            execution.block(self.commands, message)
        except _Stop:
            pass
        return execution.finish()


def load(compiled: dict[str, Any]) -> Program:
    """The runnable form of a compiled script (once per script per process)."""
    return Program(_commands(compiled["commands"]))


def failed(error: str) -> Outcome:
    """The outcome of a script that failed: the message in the Inbox, unflagged (nothing is lost)."""
    return Outcome(targets=[Target(None, frozenset())], error=error)
