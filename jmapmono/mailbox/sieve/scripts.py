"""An account's Sieve scripts (RFC 9661 §2): stored with their compiled form, at most one active.

A script's content is a blob the account holds (reference ``sieve:<id>``); its compiled form
(:mod:`jmapmono.mailbox.sieve.compile`) is stored beside it, made once when the content is set. Every
change is one transaction with its change-log entries (type ``SieveScript``) and one outbox event, so
SieveScript/changes and pushes follow it like any other type. Delivery asks :meth:`SieveScripts.active`:
one indexed read, and the loaded program is kept per process by (script id, blob id), so a script is
never parsed nor loaded per message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.mailbox import changes
from jmapmono.mailbox.blobs import BlobStore
from jmapmono.mailbox.events import StatesChanged
from jmapmono.mailbox.mailbox_plan import StateMismatch
from jmapmono.mailbox.model import AlreadyExists, MailboxError, NotFound, new_id
from jmapmono.mailbox.mutation import Mutation
from jmapmono.mailbox.sieve.compile import FORM, compile_script
from jmapmono.mailbox.sieve.run import Program, load
from jmapmono.store import Database, Transaction

log = logging.getLogger(__name__)

TYPE = "SieveScript"
#: Loaded programs kept per process (scripts of that many active accounts).
CACHE_SIZE = 1024


class InvalidSieve(MailboxError):
    set_error = "invalidSieve"


class SieveIsActive(MailboxError):
    set_error = "sieveIsActive"


class TooManyScripts(MailboxError):
    set_error = "overQuota"


@dataclass(frozen=True)
class Limits:
    """Bounds on what an account may store and what one delivery may do (configuration)."""

    max_script_size: int = 65_536
    max_scripts: int = 16
    max_rules: int = 2_000
    max_redirects: int = 4
    max_name_size: int = 512


@dataclass(frozen=True)
class Script:
    id: str
    name: str
    blob_id: str
    is_active: bool


@dataclass(frozen=True)
class Content:
    """Checked content for a create or an update: its blob and compiled form."""

    blob_id: str
    compiled: dict[str, Any]


@dataclass
class Change:
    """One /set call's changes, already validated (names, contents) by the caller."""

    create: dict[str, tuple[str | None, Content]] = field(default_factory=dict)
    #: id -> (new name or None to keep it, new content or None to keep it)
    update: dict[str, tuple[str | None, Content | None]] = field(default_factory=dict)
    destroy: list[str] = field(default_factory=list)
    #: Activate this script (an id, or "#creation id") once every change succeeded.
    activate: str | None = None
    deactivate: bool = False


@dataclass
class Result:
    old_state: str = ""
    new_state: str = ""
    created: dict[str, Script] = field(default_factory=dict)
    updated: dict[str, Script] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    errors: dict[str, MailboxError] = field(default_factory=dict)
    destroy_errors: dict[str, MailboxError] = field(default_factory=dict)
    #: Ids whose isActive changed (reported in created/updated by the JMAP layer).
    activation_changed: set[str] = field(default_factory=set)
    #: The active script after the call (None: none is).
    active_id: str | None = None


_COLUMNS = "id, name, blob_id, is_active"


def _script(r: Any) -> Script:
    return Script(r["id"], r["name"], r["blob_id"], bool(r["is_active"]))


def delete_account_data(tx: Transaction, account_id: str) -> None:
    """Forget the account's scripts and their vacation replies (inside the transaction deleting its user)."""
    tx.execute("DELETE FROM sieve_scripts WHERE account_id = ?", (account_id,))
    tx.execute("DELETE FROM sieve_vacation_replies WHERE account_id = ?", (account_id,))


class SieveScripts:
    def __init__(self, db: Database, blobs: BlobStore, limits: Limits | None = None) -> None:
        self.db = db
        self.blobs = blobs
        self.limits = limits or Limits()
        self._programs: OrderedDict[tuple[str, str], Program] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, content: bytes) -> dict[str, Any]:
        """The compiled form of ``content``; InvalidSieve naming the line of the first error."""
        from jmapmono.mailbox.sieve.parse import SieveSyntaxError

        if len(content) > self.limits.max_script_size:
            raise InvalidSieve(f"the script is larger than {self.limits.max_script_size} octets")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSieve("the script is not UTF-8 (RFC 5228 §2.2)") from None
        try:
            return compile_script(text, self.limits.max_rules)
        except SieveSyntaxError as e:
            raise InvalidSieve(str(e)) from None

    # -- reading ------------------------------------------------------------------------------------------------

    def get(self, account_id: str) -> tuple[list[Script], str]:
        """Every script of the account (by name) and the SieveScript state."""
        with self.db.read() as tx:
            rows = tx.query(
                f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = ? ORDER BY name, id", (account_id,)
            )
            return [_script(r) for r in rows], changes.state(tx, account_id, TYPE)

    def active(self, account_id: str) -> tuple[str, Program] | None:
        """The account's active script (id, loaded program), None when none is active."""
        # Each read is one statement alone (no transaction: a delivery pays one round trip when nothing changed).
        rows = self.db.query_alone(
            "SELECT id, blob_id FROM sieve_scripts WHERE account_id = ? AND is_active = 1", (account_id,)
        )
        if not rows:
            return None
        key = (rows[0]["id"], rows[0]["blob_id"])
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                return key[0], program
        rows = self.db.query_alone("SELECT blob_id, compiled FROM sieve_scripts WHERE id = ?", (key[0],))
        if not rows:
            return None  # deleted in between
        key, compiled = (key[0], rows[0]["blob_id"]), rows[0]["compiled"]  # the form of this very content
        form = json.loads(compiled) if compiled else {}
        if form.get("form") != FORM:  # stored by another version: compile again from the content
            content = self.blobs.get(account_id, key[1]) or b""
            form = self.compile(content)
        program = load(form)
        with self._lock:
            self._programs[key] = program
            while len(self._programs) > CACHE_SIZE:
                self._programs.popitem(last=False)
        return key[0], program

    # -- changing -----------------------------------------------------------------------------------------------

    def apply(self, account_id: str, change: Change, if_in_state: str | None = None) -> Result:
        """Apply one /set call in ONE transaction; per-item errors in the result. Activation happens only when
        every creation, update and destruction succeeded (RFC 9661 §2.4)."""
        started = time.monotonic()
        result = Result()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            result.old_state = changes.state(tx, account_id, TYPE)
            if if_in_state is not None and if_in_state != result.old_state:
                raise StateMismatch(f"the SieveScript state is {result.old_state!r}, not {if_in_state!r}")
            rows = tx.query(f"SELECT {_COLUMNS} FROM sieve_scripts WHERE account_id = ?", (account_id,))
            current = {r["id"]: _script(r) for r in rows}
            names = {s.name: s.id for s in current.values()}
            created_ids: dict[str, str] = {}
            for cid, (name, content) in change.create.items():
                if len(current) >= self.limits.max_scripts:
                    result.errors[cid] = TooManyScripts(f"at most {self.limits.max_scripts} scripts per account")
                    continue
                script_id = new_id("S")
                name = name if name is not None else f"script-{script_id}"
                if name in names:
                    result.errors[cid] = AlreadyExists(f"a script is named {name!r}", ["name"], names[name])
                    continue
                tx.execute(
                    "INSERT INTO sieve_scripts (id, account_id, name, blob_id, is_active, compiled, created_at) "
                    "VALUES (?, ?, ?, ?, 0, ?, ?)",
                    (script_id, account_id, name, content.blob_id, json.dumps(content.compiled), now_ms()),
                )
                self.blobs.add_ref(tx, account_id, content.blob_id, f"sieve:{script_id}", "application/sieve")
                current[script_id] = Script(script_id, name, content.blob_id, False)
                names[name] = script_id
                created_ids[cid] = script_id
                result.created[cid] = current[script_id]
            for script_id, (name, new_content) in change.update.items():
                script = current.get(script_id)
                if script is None:
                    result.errors[script_id] = NotFound(f"no script {script_id!r}")
                    continue
                new_name = script.name if name is None else name
                if new_name != script.name and new_name in names:
                    result.errors[script_id] = AlreadyExists(
                        f"a script is named {new_name!r}", ["name"], names[new_name]
                    )
                    continue
                blob_id = script.blob_id if new_content is None else new_content.blob_id
                compiled = None if new_content is None else json.dumps(new_content.compiled)
                tx.execute(
                    "UPDATE sieve_scripts SET name = ?, blob_id = ?, compiled = COALESCE(?, compiled) "
                    "WHERE id = ? AND account_id = ?",
                    (new_name, blob_id, compiled, script_id, account_id),
                )
                if blob_id != script.blob_id:
                    self.blobs.remove_ref(tx, account_id, script.blob_id, f"sieve:{script_id}")
                    self.blobs.add_ref(tx, account_id, blob_id, f"sieve:{script_id}", "application/sieve")
                names.pop(script.name, None)
                names[new_name] = script_id
                current[script_id] = Script(script_id, new_name, blob_id, script.is_active)
                result.updated[script_id] = current[script_id]
            for script_id in change.destroy:
                script = current.get(script_id)
                if script is None:
                    result.destroy_errors[script_id] = NotFound(f"no script {script_id!r}")
                    continue
                if script.is_active and not change.deactivate:
                    result.destroy_errors[script_id] = SieveIsActive("the active script cannot be destroyed")
                    continue
                tx.execute("DELETE FROM sieve_scripts WHERE id = ?", (script_id,))
                self.blobs.remove_ref(tx, account_id, script.blob_id, f"sieve:{script_id}")
                del current[script_id]
                names.pop(script.name, None)
                result.destroyed.append(script_id)
            if not result.errors and not result.destroy_errors:
                self._activate(tx, account_id, change, current, created_ids, result)
            result.active_id = next((s.id for s in current.values() if s.is_active), None)
            created = list(created_ids.values())
            updated = sorted(set(result.updated) | result.activation_changed - set(created))
            m.created(TYPE, created)
            m.updated(TYPE, updated)
            m.destroyed(TYPE, result.destroyed)
            event = StatesChanged(
                account_id=account_id,
                changes={TYPE: {"created": created, "updated": updated, "destroyed": list(result.destroyed)}},
            )
            states = m.finish(event)
            result.new_state = states.get(TYPE, result.old_state)
        log.info(
            kv(
                event="sieve_scripts_set",
                account=account_id,
                created=len(result.created),
                updated=len(result.updated),
                destroyed=len(result.destroyed),
                refused=len(result.errors) + len(result.destroy_errors),
                active_changed=len(result.activation_changed),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return result

    @staticmethod
    def _activate(
        tx: Transaction,
        account_id: str,
        change: Change,
        current: dict[str, Script],
        created_ids: dict[str, str],
        result: Result,
    ) -> None:
        """onSuccessDeactivateScript first, then onSuccessActivateScript (RFC 9661 §2.4)."""
        active = {s.id for s in current.values() if s.is_active}
        wanted = set(active)
        if change.deactivate:
            wanted = set()
        if change.activate is not None:
            target = change.activate
            if target.startswith("#"):
                target = created_ids.get(target[1:], "")
            if target in current:  # an unknown id is ignored (RFC 9661 §2.4)
                wanted = {target}
        if wanted == active:
            return
        for script_id in active - wanted:
            tx.execute("UPDATE sieve_scripts SET is_active = 0 WHERE id = ?", (script_id,))
        for script_id in wanted - active:
            tx.execute("UPDATE sieve_scripts SET is_active = 1 WHERE id = ?", (script_id,))
        for script_id in active ^ wanted:
            s = current[script_id]
            current[script_id] = Script(s.id, s.name, s.blob_id, script_id in wanted)
            result.activation_changed.add(script_id)
            for bucket in (result.created, result.updated):
                for key, value in bucket.items():
                    if value.id == script_id:
                        bucket[key] = current[script_id]
