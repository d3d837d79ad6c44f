"""A real SMTP server for tests, standing in for the relay: aiosmtpd in a process of its own.

aiosmtpd is asyncio and the tests run gevent-patched, so the server is this script run as a child
(``python -m tests.support.smtp_sink --port P --dir D``). Each message it accepts is written to D as
one JSON file (``{"mail_from", "rcpt_tos", "data": base64}``), atomically (written, then renamed),
so a test waits for files with a deadline and never sees half of one.

Scripted answers, by the local part of an address:
- RCPT ``reject…``: ``550 5.1.1``; ``tempfail…``: ``451 4.2.0``; ``spam…``: a two-line ``550`` reply.
- MAIL FROM ``refused…``: ``553 5.7.1``.
- ``--auth USER:PASS``: AUTH (PLAIN/LOGIN, no TLS) is required and only these credentials pass.
- ``--tls-cert FILE --tls-key FILE``: STARTTLS is offered and required before anything else (AUTH too).
Each message records whether its session was encrypted (``tls``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.servers import ROOT, free_port, wait_for_port
from tests.support.waiting import wait_until


class SmtpSink:
    """The client side: starts the child, reads what it received."""

    def __init__(self, directory: Path, auth: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.support.smtp_sink", "--port", str(self.port), "--dir", str(self.dir)]
        if auth:
            argv += ["--auth", auth]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
        wait_for_port(self.port, 20, self.proc)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages(self) -> list[dict]:
        """Every message received so far, oldest first, ``data`` decoded to bytes."""
        out = []
        for path in sorted(self.dir.glob("*.json")):
            item = json.loads(path.read_text())
            item["data"] = base64.b64decode(item["data"])
            out.append(item)
        return out

    def wait(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Wait until ``count`` messages arrived (raises on timeout); return them all."""
        enough = lambda: found if len(found := self.messages()) >= count else None  # noqa: E731
        return wait_until(enough, timeout, interval=0.02, message=f"{count} messages at the SMTP sink")

    def clear(self) -> None:
        for path in self.dir.glob("*.json"):
            path.unlink()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- the server (runs in the child process only) ------------------------------------------------------------------


def _login(session) -> str | None:
    login = getattr(getattr(session, "auth_data", None), "login", None)
    return login.decode() if isinstance(login, bytes) else login


class _Handler:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.count = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.split("@")[0].lower().startswith("refused"):
            return "553 5.7.1 Sender address rejected"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        if local.startswith("tempfail"):
            return "451 4.2.0 Mailbox busy, try again later"
        if local.startswith("spam"):
            return "550-5.7.1 Our system has detected that this message is\r\n550 5.7.1 likely spam."
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        item = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": base64.b64encode(envelope.original_content or envelope.content).decode(),
            "login": _login(session),
            "tls": session.ssl is not None,
        }
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(item, f)
        os.rename(tmp, self.dir / f"{time.time_ns():020d}-{self.count:06d}.json")
        return "250 2.0.0 OK queued"


def main() -> None:
    import argparse
    import logging
    import warnings

    warnings.simplefilter("ignore")  # AUTH without TLS is what a loopback test wants
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--auth")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    kwargs: dict = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = getattr(auth_data, "login", None) == user.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok, handled=False, auth_data=auth_data)  # handled=False: send the 535

        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": bool(args.tls_cert)}
    if args.tls_cert:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs.update(tls_context=context, require_starttls=True)
    # Blocked before the server thread starts (it inherits the mask): only the main thread takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    controller = Controller(_Handler(args.dir), hostname="127.0.0.1", port=args.port, decode_data=False, **kwargs)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    main()
