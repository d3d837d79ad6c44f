"""The LMTP server (RFC 2033) on aiosmtpd: how mail arrives from the MTA.

aiosmtpd is asyncio and must never run in a gevent-patched process, so this
server runs in a process of its own (``python -m jmapmono lmtp``; ``serve``
supervises one as a child). The store is synchronous, so every database call
runs in a small thread pool and the event loop keeps serving other sessions.

The reply contract with the MTA:

- LHLO advertises SIZE (``JMAPMONO_MAX_MESSAGE_SIZE``), PIPELINING,
  ENHANCEDSTATUSCODES, 8BITMIME and SMTPUTF8; every reply after the greeting
  and LHLO carries an enhanced status code.
- RCPT for an unknown user: ``550 5.1.1``; database unavailable: ``451 4.3.0``.
- MAIL FROM with SIZE= over the limit: ``552 5.3.4``.
- After DATA, one reply per accepted recipient, in RCPT order, each sent only
  once that recipient's copy is durably stored (``250 2.0.0``), or ``451 4.3.0``
  (database unavailable: the MTA keeps the message and retries), ``550 5.1.1``
  (the user was deleted meanwhile), ``552 5.2.2`` (that recipient is over
  quota; the others are still delivered), ``550 5.7.1`` with the reason (that
  recipient's Sieve script rejected it: reject/ereject, RFC 5429 §2.1: the MTA
  bounces it), ``552 5.3.4`` (message over the limit: the excess is read and
  discarded, never buffered) or ``554 5.6.0`` (empty).

Who may connect: LMTP has no authentication, and what it stores is trusted
(the ``Return-Path`` it writes is where vacation replies go), so a client whose
address is outside ``JMAPMONO_LMTP_ALLOWED_NETWORKS`` (loopback by default) gets
``554`` instead of the greeting (RFC 5321 §3.1: a permanent refusal of the
session, not 421, which tells the client to retry), ``503`` to anything but QUIT,
and the connection is logged (``lmtp_refused``).

Stored bytes: ``Return-Path:`` and ``Received:`` headers (this server makes the
final delivery, RFC 5321 section 4.4), then exactly the bytes the sender meant:
dot-stuffing undone, CRLF, bare CR/LF, 8-bit and over-long lines kept. The trace
headers name no recipient, so a message for several users is one blob.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Protocol

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from jmapmono import metrics
from jmapmono.accounts.users import AccountError
from jmapmono.config import Config, IPNetwork
from jmapmono.intake.deliver import reply_text
from jmapmono.log import kv
from jmapmono.mailbox.manager import SieveRejected
from jmapmono.mailbox.quota import OverQuota
from jmapmono.store import StoreError

if TYPE_CHECKING:
    from jmapmono.accounts.users import Accounts
    from jmapmono.mailbox.manager import MailboxManager

log = logging.getLogger("jmapmono.lmtp")

#: RCPT commands accepted in one transaction (RFC 5321 asks for at least 100).
MAX_RECIPIENTS = 1000
#: Threads running deliveries and user look-ups (the store serialises SQLite writes anyway).
WORKERS = 4
#: How long a shutdown waits for a transaction in progress before closing its connection.
SHUTDOWN_GRACE_SECONDS = 10.0
#: An idle or silent session is closed after this long (RFC 5321 section 4.5.3.2 suggests minutes).
SESSION_TIMEOUT_SECONDS = 300.0

_REPLY = re.compile(r"^([245])(\d\d)([ -])(.*)$", re.S)
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")
_ENHANCED_DEFAULTS = {
    "421": "4.3.2",
    "451": "4.3.0",
    "452": "4.5.3",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.1.1",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.6.0",
    "555": "5.5.4",
}
_UNSAFE_HELO = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
#: Commands a refused client may send (each answered 503) before the connection is closed anyway.
REFUSED_COMMANDS = 10
#: How long a refused client has for its QUIT.
REFUSED_TIMEOUT_SECONDS = 30.0


def enhanced(reply: str) -> str:
    """Give ``reply`` an enhanced status code (RFC 2034) unless it has one or is the greeting."""
    match = _REPLY.match(reply)
    if match is None:
        return reply
    code, sep, text = match[1] + match[2], match[3], match[4]
    if code == "220" or _HAS_ENHANCED.match(text):
        return reply
    detail = _ENHANCED_DEFAULTS.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{detail} {text}" if text else f"{code}{sep}{detail}"


def peer_allowed(peer: object, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether the connection's peer (``(host, port, …)``) is in one of ``networks`` (IPv4-mapped IPv6 as IPv4)."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def trace_headers(mail_from: str, helo: str | None, peer: object, hostname: str, when: datetime) -> bytes:
    """The ``Return-Path:`` and ``Received:`` headers this final delivery prepends."""
    sender = "" if mail_from in ("", "<>") else mail_from
    helo_name = _UNSAFE_HELO.sub("_", (helo or "unknown")[:255]) or "unknown"
    ip = peer[0] if isinstance(peer, tuple) and peer else "unknown"
    literal = f"[IPv6:{ip}]" if ":" in str(ip) else f"[{ip}]"
    text = (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from {helo_name} ({literal})\r\n"
        f"\tby {hostname} (jmapmono) with LMTP;\r\n"
        f"\t{format_datetime(when)}\r\n"
    )
    return text.encode("utf-8", "surrogateescape")


class DeliveryServices(Protocol):
    """What delivering needs of the process (its runtime, opened for durable commits)."""

    @property
    def accounts(self) -> Accounts: ...
    @property
    def mailboxes(self) -> MailboxManager: ...
    def stop(self) -> None: ...


class LazyServices:
    """The process's services, opened on first use and again after a failed open.

    The server starts and answers even when the database is down: the MTA then
    gets ``451`` and retries, instead of a refused connection and no reason.
    """

    def __init__(self, open_services: Callable[[], DeliveryServices]) -> None:
        self.open_services = open_services
        self._lock = threading.Lock()
        self._services: DeliveryServices | None = None

    def get(self) -> DeliveryServices:
        """The open services; raises StoreError while the database cannot be opened."""
        with self._lock:
            if self._services is None:
                self._services = self.open_services()
            return self._services

    def close(self) -> None:
        with self._lock:
            if self._services is not None:
                self._services.stop()
                self._services = None


class DeliveryHandler:
    """aiosmtpd hooks (LHLO, RCPT, errors) and the per-recipient delivery itself."""

    def __init__(self, services: LazyServices, executor: ThreadPoolExecutor) -> None:
        self.services = services
        self.executor = executor

    async def handle_EHLO(
        self, server: LMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Add the extensions RFC 2033 requires of an LMTP server to aiosmtpd's LHLO reply."""
        session.host_name = hostname
        *head, last = responses
        return [*head, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", last]

    async def handle_RCPT(
        self, server: LMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        try:
            address.encode("utf-8")
        except UnicodeEncodeError:
            return "553 5.1.3 Recipient address is not valid UTF-8"
        status = await asyncio.get_running_loop().run_in_executor(self.executor, self._check_recipient, address)
        if status is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 2.1.5 OK"
        log.info(kv(event="lmtp_rcpt_rejected", rcpt=address, reply=status[:3], peer=_peer(session)))
        return status

    async def handle_exception(self, error: Exception) -> str:
        log.error(kv(event="lmtp_error", error=type(error).__name__, detail=str(error)), exc_info=error)
        return "451 4.3.0 Temporary server error, try again later"

    def _check_recipient(self, address: str) -> str | None:
        """None when ``address`` is a user here, else the RCPT reply (runs in a worker thread)."""
        try:
            user = self.services.get().accounts.get(address)
        except StoreError as e:
            log.warning(kv(event="lmtp_database_unavailable", rcpt=address, error=str(e)))
            return "451 4.3.0 Mailbox database unavailable, try again later"
        if user is None:
            return f"550 5.1.1 <{address}>: no such user here"
        return None

    def deliver(self, rcpt: str, raw: bytes, peer: str) -> str:
        """Store ``raw`` for ``rcpt``; the reply for that recipient (runs in a worker thread)."""
        started = time.monotonic()
        account = message = error = None
        try:
            delivered = self.services.get().mailboxes.deliver(rcpt, raw)
            account, message = delivered.account_id, delivered.message_id
            reply = f"250 2.0.0 <{rcpt}> delivered as {message}"
        except AccountError:
            reply = f"550 5.1.1 <{rcpt}>: no such user here"
        except OverQuota as e:
            error = str(e)
            reply = f"552 5.2.2 <{rcpt}> mailbox full: {e}"
        except SieveRejected as e:
            error = "rejected by the recipient's filter"
            reply = f"550 5.7.1 <{rcpt}> {reply_text(e.description)}"
        except StoreError as e:
            error = str(e)
            reply = f"451 4.3.0 <{rcpt}> mailbox database unavailable, try again later"
        except Exception as e:  # never lose mail to a bug: the MTA keeps it and retries
            error = f"{type(e).__name__}: {e}"
            log.exception(kv(event="lmtp_delivery_failed", rcpt=rcpt, error=type(e).__name__))
            reply = f"451 4.3.0 <{rcpt}> temporary server error, try again later"
        metrics.delivery(reply, time.monotonic() - started)
        log.info(
            kv(
                event="lmtp_delivery",
                rcpt=rcpt,
                size=len(raw),
                ms=f"{(time.monotonic() - started) * 1000:.1f}",
                result=reply[:3],
                account=account,
                message=message,
                peer=peer,
                error=error,
            )
        )
        return reply


def _peer(session: Session | None) -> str:
    peer = getattr(session, "peer", None)
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


class JmapLMTP(LMTP):
    """aiosmtpd's LMTP session with the per-recipient DATA replies LMTP requires.

    aiosmtpd answers DATA once (SMTP style) and refuses over-long lines; an LMTP
    server must answer once per recipient, and losing mail to a long line helps
    no one, so DATA is read here.
    """

    _in_lhlo = False
    #: True from DATA until every recipient has its reply: shutdown waits for it.
    busy = False
    closing = False

    def __init__(
        self,
        handler: DeliveryHandler,
        connections: set[JmapLMTP],
        allowed: tuple[IPNetwork, ...],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.handler = handler
        self.connections = connections
        self.allowed = allowed

    async def _handle_client(self) -> None:
        """The session, unless the client's address is not allowed: then ``554``, and no command is served."""
        peer = self.session.peer if self.session else None
        if peer_allowed(peer, self.allowed):
            await super()._handle_client()
            return
        log.warning(kv(event="lmtp_refused", peer=_peer(self.session), reason="address not allowed"))
        await self._refuse()

    async def _refuse(self) -> None:
        """RFC 5321 §3.1: 554 in place of the greeting, 503 to every command until QUIT (bounded), then close."""
        self._reset_timeout(REFUSED_TIMEOUT_SECONDS)
        await super().push(f"554 {self.hostname} LMTP service not available to this client")
        try:
            for _ in range(REFUSED_COMMANDS):
                line = await self._reader.readline()
                if not line or line.strip().upper() == b"QUIT":
                    if line:
                        await super().push("221 Bye")
                    break
                await super().push("503 Bad sequence of commands")
        except (ValueError, ConnectionError):  # an over-long line, a reset: nothing more to say
            pass
        finally:
            if self.transport is not None:
                self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.connections.discard(self)
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            await super().push(status if self._in_lhlo else enhanced(status))
        else:
            await super().push(status)

    async def smtp_LHLO(self, arg: str) -> None:
        self._in_lhlo = True  # RFC 2034: no enhanced codes in the LHLO reply
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._in_lhlo = False

    async def check_helo_needed(self, helo: str = "LHLO") -> bool:
        return await super().check_helo_needed(helo)

    def close_for_shutdown(self) -> None:
        """Tell an idle client we are going away (421) and close."""
        self.closing = True
        if self.transport is not None:
            try:
                self._writer.write(b"421 4.3.2 Service shutting down\r\n")
            except (AttributeError, RuntimeError, OSError):
                pass
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self.busy = True
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content, size = await self._read_data()
            envelope = self.envelope
            self._set_post_data_state()
            await self._reply_per_recipient(envelope, content, size)
        finally:
            self.busy = False
        self._reset_timeout()

    async def _read_data(self) -> tuple[bytes | None, int]:
        """The un-stuffed message (None when over the limit: the rest is read and dropped) and its size."""
        limit = self.data_size_limit
        reader, loop = self._reader, asyncio.get_running_loop()
        buf = bytearray()
        size = 0
        at_line_start = True
        last_reset = loop.time()
        while True:
            try:
                chunk = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as e:  # a line longer than the reader's limit: take it in pieces
                chunk = await reader.read(e.consumed)
            except asyncio.IncompleteReadError:  # the client went away mid-message: nothing was promised
                self._writer.close()
                raise asyncio.CancelledError() from None
            if loop.time() - last_reset > 1.0:  # data still flowing: the session is not idle
                last_reset = loop.time()
                self._reset_timeout()
            if at_line_start:
                if chunk == b".\r\n":
                    break
                if chunk.startswith(b"."):
                    chunk = chunk[1:]
            at_line_start = chunk.endswith(b"\r\n")
            size += len(chunk)
            if limit and size > limit:
                buf.clear()
            else:
                buf += chunk
        return (None if limit and size > limit else bytes(buf)), size

    async def _reply_per_recipient(self, envelope: Envelope, content: bytes | None, size: int) -> None:
        rcpts = list(envelope.rcpt_tos)
        peer = _peer(self.session)
        if content is None or not content:
            reason = "too_big" if content is None else "empty"
            reply = (
                f"552 5.3.4 Message size exceeds fixed maximum message size ({self.data_size_limit})"
                if content is None
                else "554 5.6.0 Message is empty"
            )
            log.info(kv(event="lmtp_rejected", reason=reason, size=size, rcpts=len(rcpts), peer=peer))
            for _ in rcpts:
                metrics.delivery(reply, 0.0)
                await self.push(reply)
            return
        raw = (
            trace_headers(
                envelope.mail_from or "",
                self.session.host_name if self.session else None,
                self.session.peer if self.session else None,
                self.hostname,
                datetime.now(UTC),
            )
            + content
        )
        loop = asyncio.get_running_loop()
        replies: dict[str, str] = {}
        for rcpt in rcpts:
            key = rcpt.lower()
            if key not in replies:  # the same user named twice gets one copy and two replies
                replies[key] = await loop.run_in_executor(self.handler.executor, self.handler.deliver, rcpt, raw, peer)
            self._reset_timeout()
            await self.push(replies[key])


class LmtpServer:
    """One listening LMTP server with its thread pool, services and graceful shutdown."""

    def __init__(
        self, config: Config, open_services: Callable[[], DeliveryServices], hostname: str | None = None
    ) -> None:
        self.config = config
        self.hostname = hostname or socket.gethostname()
        self.services = LazyServices(open_services)
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="lmtp")
        self.handler = DeliveryHandler(self.services, self.executor)
        self.connections: set[JmapLMTP] = set()

    def _protocol(self) -> JmapLMTP:
        return JmapLMTP(
            self.handler,
            self.connections,
            self.config.lmtp_allowed_networks,
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="jmapmono LMTP",
            timeout=SESSION_TIMEOUT_SECONDS,
            loop=asyncio.get_running_loop(),
        )

    def _open_database(self) -> None:
        try:
            self.services.get()
        except Exception as e:  # keep serving: RCPT answers 451 until the database is back
            log.warning(kv(event="lmtp_database_unavailable", error=f"{type(e).__name__}: {e}"))

    async def serve(self, host: str, port: int, exit_with_parent: bool = False) -> int:
        """Listen on ``host:port`` until SIGTERM/SIGINT (or the parent process dies); return 0."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await loop.run_in_executor(self.executor, self._open_database)
        try:
            server = await loop.create_server(self._protocol, host, port, reuse_address=True)
        except OSError:
            self.executor.shutdown(wait=False)
            self.services.close()
            raise
        watcher = loop.create_task(_watch_parent(os.getppid(), stop)) if exit_with_parent else None
        log.info(
            kv(
                event="lmtp_listening",
                address=f"{host}:{port}",
                allowed=",".join(str(n) for n in self.config.lmtp_allowed_networks),
                database="sqlite" if self.config.is_sqlite else "postgres",
                max_size=self.config.max_message_size,
                pid=os.getpid(),
            )
        )
        try:
            await stop.wait()
        finally:
            log.info(kv(event="lmtp_stopping", connections=len(self.connections)))
            if watcher is not None:
                watcher.cancel()
            server.close()
            await self._drain(SHUTDOWN_GRACE_SECONDS)
            await server.wait_closed()
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.services.close()
            log.info(kv(event="lmtp_stopped"))
        return 0

    async def _drain(self, grace: float) -> None:
        """Close idle sessions now (421); let a transaction in progress finish, up to ``grace``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            for conn in list(self.connections):
                if not conn.busy and not conn.closing:
                    conn.close_for_shutdown()
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


async def _watch_parent(ppid: int, stop: asyncio.Event) -> None:
    """Stop when the supervising process is gone (we were re-parented), so no orphan holds the port."""
    while not stop.is_set():
        if os.getppid() != ppid:
            log.warning(kv(event="lmtp_parent_gone", parent=ppid))
            stop.set()
            return
        await asyncio.sleep(1.0)


def run(
    config: Config,
    open_services: Callable[[], DeliveryServices],
    host: str,
    port: int,
    exit_with_parent: bool = False,
) -> int:
    """Run the LMTP server in this (unpatched) process until it is told to stop; ``open_services`` opens
    the process's runtime (again after a failed open: the database may be down at first)."""
    return asyncio.run(LmtpServer(config, open_services).serve(host, port, exit_with_parent))
