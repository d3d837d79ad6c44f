"""Sending mail to other servers through the configured SMTP relay (``JMAPMONO_SMTP_RELAY``).

jmapmono does not deliver to the Internet itself: mail for addresses that are not its own users goes to
a smarthost (the local Postfix, a provider's submission server), which queues and retries. One
:meth:`SmtpRelay.send` is one SMTP transaction: every recipient's RCPT reply is kept, because JMAP reports
a DeliveryStatus per recipient (RFC 8621 §7). ``smtplib`` is used as is: under gevent its sockets are
cooperative, in a plain process (the LMTP child) it runs in the calling thread.

The relay password never crosses a network in clear text: with a user set, AUTH happens only inside the
STARTTLS session (the certificate verified against ``JMAPMONO_SMTP_RELAY_CA_FILE`` or the system's CAs) or
with a relay whose connected address is loopback. The configuration refuses the other combinations at start
(:func:`jmapmono.config.load_config`); the check here holds whatever the name resolved to.

Never call this inside a database transaction: it waits on the network.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field

from jmapmono.config import Config, is_loopback_host, parse_host_port
from jmapmono.log import kv

log = logging.getLogger(__name__)

#: Seconds to wait for the relay at each step of the exchange.
TIMEOUT_SECONDS = 30.0
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply, its text in the one-line form of RFC 8621 §7 (``550 5.7.1 Some text``)."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


def format_reply(code: int, message: bytes | str) -> Reply:
    """An SMTP reply as RFC 8621 §7 writes it: lines joined by spaces, each later line losing the (whole-word)
    prefix it shares with the first, e.g. the enhanced status code repeated on every line."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.replace("\r", "").split("\n")]
    first = lines[0] if lines else ""
    out = [first]
    for line in lines[1:]:
        n = 0
        while n < min(len(first), len(line)) and first[n] == line[n]:
            n += 1
        if n < len(line) and n < len(first):
            n = line.rfind(" ", 0, n) + 1  # keep whole words
        out.append(line[n:].strip())
    return Reply(code, " ".join([str(code), *[part for part in out if part]]))


class RelayError(Exception):
    """Nothing was relayed. ``stage`` is where it failed (connect, starttls, auth, mail, data); ``reply`` is
    the relay's answer when it gave one (None: unreachable, timed out, hung up)."""

    def __init__(self, stage: str, description: str, reply: Reply | None = None) -> None:
        super().__init__(description)
        self.stage = stage
        self.description = description
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply is not None and self.reply.permanent


@dataclass
class RelayResult:
    """One SMTP transaction: each recipient's RCPT reply, and the reply to the message data (None when no
    recipient was accepted, so no data was sent)."""

    recipients: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None
    #: The largest message the relay accepts (its EHLO SIZE), when it says.
    max_size: int | None = None

    @property
    def accepted(self) -> list[str]:
        """The recipients the relay took the message for (RCPT accepted and the data accepted)."""
        if self.data is None or not self.data.ok:
            return []
        return [r for r, reply in self.recipients.items() if reply.ok]


def to_crlf(data: bytes) -> bytes:
    """SMTP wants CRLF line ends: bare LFs (a message imported with Unix line ends) become CRLF."""
    return _BARE_LF.sub(b"\r\n", data)


class SmtpRelay:
    """The SMTP relay of the configuration (``configured`` is False when there is none)."""

    def __init__(self, config: Config, timeout: float = TIMEOUT_SECONDS) -> None:
        self.address = config.smtp_relay
        self.user = config.smtp_relay_user
        self.password = config.smtp_relay_password
        self.starttls = config.smtp_relay_starttls
        self.ca_file = config.smtp_relay_ca_file
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        self.helo = socket.gethostname() or "localhost"  # not getfqdn(): no DNS lookup on the way

    @property
    def configured(self) -> bool:
        return self.address is not None

    def send(self, mail_from: str, recipients: list[str], message: bytes) -> RelayResult:
        """Relay ``message`` from ``mail_from`` ("" for the null sender) to ``recipients``.

        Returns every recipient's reply (some may be refused while others are accepted). Raises RelayError
        when the relay cannot be used at all: unreachable, refusing the session, the login or the sender.
        """
        if self.address is None:
            raise RelayError("connect", "no SMTP relay is configured (JMAPMONO_SMTP_RELAY)")
        started = time.monotonic()
        host, port = parse_host_port(self.address, "JMAPMONO_SMTP_RELAY")
        result = RelayResult()
        stage = "connect"
        smtp: smtplib.SMTP | None = None
        try:
            # Connected by the constructor, which also keeps ``host`` as the name STARTTLS verifies the
            # certificate against (a later connect() does not: TLS would then have no name to check).
            smtp = smtplib.SMTP(host, port, timeout=self.timeout, local_hostname=self.helo)
            smtp.ehlo_or_helo_if_needed()
            encrypted = False
            if self.starttls:
                stage = "starttls"
                if not smtp.has_extn("starttls"):
                    raise RelayError(stage, "the relay does not offer STARTTLS (JMAPMONO_SMTP_RELAY_STARTTLS is on)")
                smtp.starttls(context=self.tls_context())
                smtp.ehlo()
                encrypted = True
            if self.user:
                stage = "auth"
                peer = _peer_address(smtp)
                if not encrypted and not is_loopback_host(peer):
                    raise RelayError(
                        stage, f"refusing to send the relay password in clear text to {peer} (STARTTLS is off)"
                    )
                self._login(smtp)
            size = smtp.esmtp_features.get("size", "")
            result.max_size = int(size) if size.isdigit() and int(size) > 0 else None
            stage = "mail"
            options = []
            if not message.isascii() and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            if not (mail_from + "".join(recipients)).isascii():
                if not smtp.has_extn("smtputf8"):
                    raise RelayError(stage, "the relay does not accept internationalised addresses (SMTPUTF8)")
                options.append("SMTPUTF8")
            code, text = smtp.mail(mail_from, options)
            if not 200 <= code < 300:
                reply = format_reply(code, text)
                raise RelayError(stage, f"the relay refused the sender: {reply.text}", reply)
            stage = "rcpt"
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                result.recipients[rcpt] = format_reply(code, text)
            if any(reply.ok for reply in result.recipients.values()):
                stage = "data"
                code, text = smtp.data(to_crlf(message))
                result.data = format_reply(code, text)
            else:
                smtp.rset()
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the transaction is over; a lost QUIT changes nothing
        except RelayError as e:
            self._log(started, recipients, result, e)
            raise
        except smtplib.SMTPResponseException as e:  # includes auth, data and connect refusals
            reply = format_reply(e.smtp_code, e.smtp_error)
            error = RelayError(stage, f"the relay answered {reply.text}", reply)
            self._log(started, recipients, result, error)
            raise error from None
        except (smtplib.SMTPException, OSError) as e:  # refused, unreachable, timed out, hung up, TLS failure
            error = RelayError(stage, f"the relay at {self.address} failed at {stage}: {type(e).__name__}: {e}")
            self._log(started, recipients, result, error)
            raise error from None
        finally:
            if smtp is not None:
                smtp.close()
        self._log(started, recipients, result, None)
        return result

    def tls_context(self) -> ssl.SSLContext:
        """The context STARTTLS verifies the relay with (made once): the CA file's certificates, else the system's."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=None if self.ca_file is None else str(self.ca_file))
        return self._tls

    def _login(self, smtp: smtplib.SMTP) -> None:
        """Log in with ONE mechanism (PLAIN preferred): ``smtplib.login`` retries every mechanism offered, which
        turns a wrong password into several attempts (and, with some servers, a hang)."""
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        mechanism = next((m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in offered), None)
        if mechanism is None:
            raise RelayError("auth", f"the relay offers no AUTH mechanism jmapmono speaks (offered: {offered})")
        smtp.user, smtp.password = self.user, self.password
        smtp.auth(mechanism, getattr(smtp, "auth_" + mechanism.lower().replace("-", "_")))

    def _log(self, started: float, recipients: list[str], result: RelayResult, error: RelayError | None) -> None:
        ms = round((time.monotonic() - started) * 1000, 1)
        if error is None:
            data = result.data.text if result.data else None
            log.info(
                kv(
                    event="relay_sent",
                    relay=self.address,
                    recipients=len(recipients),
                    accepted=len(result.accepted),
                    data=data,
                    ms=ms,
                )
            )
        else:
            reply = error.reply.text if error.reply else None
            log.warning(
                kv(
                    event="relay_failed",
                    relay=self.address,
                    stage=error.stage,
                    reply=reply,
                    error=error.description,
                    ms=ms,
                )
            )


def _peer_address(smtp: smtplib.SMTP) -> str:
    """The IP address the session is connected to ("" when unknown)."""
    try:
        return str(smtp.sock.getpeername()[0]) if smtp.sock is not None else ""
    except OSError:
        return ""
