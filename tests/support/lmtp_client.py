"""A small LMTP client for tests: reads the one reply per recipient that LMTP sends after DATA.

Python's ``smtplib.LMTP`` reads a single reply after DATA, so it cannot see
per-recipient results. This client speaks the protocol on a plain socket and
does the sender's dot-stuffing itself, so tests can check the bytes stored
against the bytes meant.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def dot_stuff(message: bytes) -> bytes:
    """The DATA payload for ``message`` (which must end with CRLF): leading dots doubled, then ``.``."""
    if not message.endswith(b"\r\n"):
        raise ValueError("an LMTP message ends with CRLF")
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


class LMTPClient:
    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_reply()

    def read_reply(self) -> Reply:
        """One (possibly multi-line) reply; raises ConnectionError when the server closed."""
        lines: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise ConnectionError(f"connection closed by the server after {lines!r}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str) -> Reply:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.read_reply()

    def lhlo(self, name: str = "client.example") -> Reply:
        return self.command(f"LHLO {name}")

    def mail(self, sender: str, params: str = "") -> Reply:
        return self.command(f"MAIL FROM:<{sender}>" + (f" {params}" if params else ""))

    def rcpt(self, address: str) -> Reply:
        return self.command(f"RCPT TO:<{address}>")

    def data(self, message: bytes, accepted: int) -> list[Reply]:
        """Send ``message`` after DATA; the ``accepted`` per-recipient replies (or the DATA error)."""
        start = self.command("DATA")
        if start.code != 354:
            return [start]
        self.send(dot_stuff(message))
        return [self.read_reply() for _ in range(accepted)]

    def transaction(self, sender: str, recipients: list[str], message: bytes) -> tuple[list[Reply], list[Reply]]:
        """MAIL, every RCPT, then DATA for the accepted ones: (RCPT replies, DATA replies)."""
        mail = self.mail(sender)
        if mail.code != 250:
            raise AssertionError(f"MAIL refused: {mail}")
        rcpt_replies = [self.rcpt(r) for r in recipients]
        accepted = sum(1 for r in rcpt_replies if r.code == 250)
        if not accepted:
            self.command("RSET")
            return rcpt_replies, []
        return rcpt_replies, self.data(message, accepted)

    def quit(self) -> None:
        try:
            self.command("QUIT")
        except (ConnectionError, OSError):
            pass
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> LMTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
