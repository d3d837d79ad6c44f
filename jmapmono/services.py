"""The services of one process, built from the configuration.

The web app, the LMTP server, the CLI and the tests all hold one ``Services``;
each part is created on first use so that a CLI command opens only what it needs.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from jmapmono import store
from jmapmono.config import Config

if TYPE_CHECKING:
    from jmapmono.accounts.users import Accounts
    from jmapmono.mailbox.blobs import BlobStore
    from jmapmono.mailbox.manager import MailboxManager


class Services:
    def __init__(self, config: Config, db: store.Database | None = None) -> None:
        self.config = config
        self.db = db if db is not None else store.load(config)

    @cached_property
    def accounts(self) -> Accounts:
        from jmapmono.accounts.users import Accounts

        return Accounts(self.db, self.config)

    @cached_property
    def blobs(self) -> BlobStore:
        from jmapmono.mailbox.blobs import BlobStore

        return BlobStore(self.db, self.config)

    @cached_property
    def mailboxes(self) -> MailboxManager:
        from jmapmono.mailbox.manager import MailboxManager

        return MailboxManager(self.db, self.blobs, self.accounts)

    def close(self) -> None:
        self.db.close()


def services_from_environment() -> Services:
    """Services for a CLI command or a worker process, from the process environment."""
    from jmapmono.config import load_config

    return Services(load_config())
