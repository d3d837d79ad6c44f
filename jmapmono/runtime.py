"""The services of one process, built from the configuration.

The web app, the LMTP server, the CLI and the tests all hold one ``Runtime``;
each part is created on first use so that a CLI command opens only what it needs.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from jmapmono import store
from jmapmono.config import Config

if TYPE_CHECKING:
    from jmapmono.accounts.users import Accounts
    from jmapmono.events.bus import EventBus
    from jmapmono.mailbox.blobs import BlobStore
    from jmapmono.mailbox.changes import ChangeLog
    from jmapmono.mailbox.identities import Identities
    from jmapmono.mailbox.manager import MailboxManager
    from jmapmono.sending.smarthost import SmtpRelay
    from jmapmono.sending.submissions import Submissions
    from jmapmono.sending.vacation import Vacation


class Runtime:
    def __init__(self, config: Config, db: store.Database | None = None) -> None:
        self.config = config
        self.db = db if db is not None else store.load(config)

    @cached_property
    def accounts(self) -> Accounts:
        from jmapmono.accounts.users import Accounts

        accounts = Accounts(self.db, self.config)
        # A new account gets its default mailboxes; a deleted one's mail goes with it (same transaction).
        accounts.on_user_created.append(lambda tx, user: self.mailboxes.provision(tx, user))
        accounts.on_user_deleted.append(lambda tx, user: self.mailboxes.remove_account_data(tx, user))
        accounts.on_user_deleted.append(lambda tx, user: _remove_sending_data(tx, user.account_id))
        return accounts

    @cached_property
    def blobs(self) -> BlobStore:
        from jmapmono.jmap.email_blobs import install_part_resolver
        from jmapmono.mailbox.blobs import BlobStore

        store = BlobStore(self.db, self.config)
        install_part_resolver(store)  # body part blob ids "<message blob id>_<partId>" (RFC 8621 §4.1.4)
        return store

    @cached_property
    def mailboxes(self) -> MailboxManager:
        from jmapmono.mailbox.manager import MailboxManager

        manager = MailboxManager(self.db, self.blobs, self.accounts)
        # Every delivery, whatever process makes it, may get the recipient's vacation reply (after commit).
        manager.on_delivered.append(lambda delivered, raw: self.vacation.on_delivered(delivered, raw))
        return manager

    @cached_property
    def relay(self) -> SmtpRelay:
        """The SMTP relay for mail to other servers (``JMAPMONO_SMTP_RELAY``; may be unconfigured)."""
        from jmapmono.sending.smarthost import SmtpRelay

        return SmtpRelay(self.config)

    @cached_property
    def identities(self) -> Identities:
        from jmapmono.mailbox.identities import Identities

        return Identities(self.db, self.accounts)

    @cached_property
    def submissions(self) -> Submissions:
        """Checks, sends (relay or local delivery) and records email submissions."""
        from jmapmono.sending.submissions import Submissions

        return Submissions(self.db, self.config, self.accounts, self.mailboxes, self.blobs, self.identities, self.relay)

    @cached_property
    def vacation(self) -> Vacation:
        """The vacation response and its automatic replies."""
        from jmapmono.sending.vacation import Vacation

        return Vacation(self.db, self.config, self.accounts, self.mailboxes, self.relay)

    @cached_property
    def changes(self) -> ChangeLog:
        """The change log behind */changes (written by the MailboxManager)."""
        from jmapmono.mailbox.changes import ChangeLog

        return ChangeLog(self.db, self.config)

    @cached_property
    def mailbox_bus(self) -> EventBus:
        """The mailbox event bus (not started: the serving process registers its groups, then starts it)."""
        from jmapmono.events.bus import EventBus

        return EventBus("mailbox", self.config.broker_url, self.db)

    @cached_property
    def jmap_bus(self) -> EventBus:
        """The JMAP event bus: state changes keyed by account, for push."""
        from jmapmono.events.bus import EventBus

        return EventBus("jmap", self.config.broker_url, self.db)

    def close(self) -> None:
        vacation = self.__dict__.get("vacation")
        if vacation is not None:
            vacation.wait_idle()  # replies still being sent need the database
        for name in ("jmap_bus", "mailbox_bus"):  # only those that were created
            bus = self.__dict__.get(name)
            if bus is not None:
                bus.stop()
        self.db.close()


def _remove_sending_data(tx: store.Transaction, account_id: str) -> None:
    from jmapmono.mailbox import identities
    from jmapmono.sending import submissions, vacation

    for module in (identities, submissions, vacation):
        module.delete_account_data(tx, account_id)


def runtime_from_environment() -> Runtime:
    """Runtime for a CLI command or a worker process, from the process environment."""
    from jmapmono.config import load_config

    return Runtime(load_config())
