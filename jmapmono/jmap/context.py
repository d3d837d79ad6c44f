"""What the JMAP layer needs of the process it runs in (the runtime provides it; this layer never imports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from jmapmono.accounts.users import Accounts
    from jmapmono.config import Config
    from jmapmono.jmap.api import CallPolicy, ConcurrencyGuard
    from jmapmono.jmap.rendered_cache import RenderedEmails
    from jmapmono.jmap.session import SessionCache
    from jmapmono.mailbox.blobs import BlobStore
    from jmapmono.mailbox.changes import ChangeLog
    from jmapmono.mailbox.identities import Identities
    from jmapmono.mailbox.manager import MailboxManager
    from jmapmono.mailbox.parsed_cache import ParsedMessages
    from jmapmono.sending.submissions import Submissions
    from jmapmono.sending.vacation import Vacation
    from jmapmono.store import Database


class JmapServices(Protocol):
    """The collaborators of every method handler (``Invocation.services``) and of the Session."""

    config: Config
    db: Database
    #: Checks run before every handler, after the account checks (each may raise a MethodError).
    call_policies: list[CallPolicy]

    @property
    def accounts(self) -> Accounts: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def mailboxes(self) -> MailboxManager: ...
    @property
    def parsed_messages(self) -> ParsedMessages: ...
    @property
    def rendered_emails(self) -> RenderedEmails: ...
    @property
    def sessions(self) -> SessionCache: ...
    @property
    def changes(self) -> ChangeLog: ...
    @property
    def identities(self) -> Identities: ...
    @property
    def submissions(self) -> Submissions: ...
    @property
    def vacation(self) -> Vacation: ...
    @property
    def request_guard(self) -> ConcurrencyGuard: ...
