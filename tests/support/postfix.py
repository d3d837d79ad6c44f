"""A private Postfix instance for tests: its own config, queue and log in a temporary directory.

``postfix -c DIR start`` runs a master with ``inet_interfaces = 127.0.0.1`` and one ``smtpd`` on a free
port; nothing of the machine's own Postfix (``/etc/postfix``, port 25) is read or touched. Postfix's
master must start as root (it drops to ``mail_owner`` for its daemons), so without root there is no
instance: :func:`postfix_unavailable` says why, and the tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port, require, wait_for_port
from tests.support.waiting import wait_until

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"
#: Postfix's own daemons, as Debian's master.cf runs them but never chrooted (the queue is a temp dir).
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if not os.path.exists(POSTFIX) or not os.path.isdir(DAEMON_DIRECTORY):
        return "Postfix is not installed (Debian: apt-get install postfix; `make test` installs it as root)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root (it drops to mail_owner); run the tests as root"
    return None


def require_postfix() -> None:
    """Skip the calling test when Postfix cannot run here; under ``CI=true`` fail instead."""
    require(postfix_unavailable())


@dataclass
class PostfixInstance:
    """A running private Postfix: SMTP on ``127.0.0.1:smtp_port``, configuration in ``config_dir``."""

    root: Path
    smtp_port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def postfix(self, *args: str) -> str:
        proc = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def smtp(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)
        client.ehlo("client.test")
        return client

    def queue_is_empty(self) -> bool:
        proc = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"], capture_output=True, text=True, timeout=60
        )
        return proc.returncode == 0 and not proc.stdout.strip()

    def stop(self) -> None:
        proc = subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            pid_file = self.root / "queue" / "pid" / "master.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), 15)
                except (ValueError, ProcessLookupError):
                    pass


def start_postfix(root: Path, main: Mapping[str, str], master: str = "", timeout: float = 60) -> PostfixInstance:
    """Start a private Postfix under ``root`` (made world-traversable: its daemons run as ``postfix``).

    ``main`` adds to or overrides ``main.cf``; ``master`` lines are appended to ``master.cf``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for directory in (root, *root.parents):
        if directory == Path("/"):
            break
        directory.chmod(directory.stat().st_mode | 0o711)
    config_dir, queue_dir, data_dir = root / "etc", root / "queue", root / "data"
    for d in (config_dir, queue_dir, data_dir):
        d.mkdir(exist_ok=True)
    shutil.chown(data_dir, "postfix", "postfix")
    port = free_port()
    settings = {
        "compatibility_level": "3.6",
        "config_directory": str(config_dir),
        "queue_directory": str(queue_dir),
        "data_directory": str(data_dir),
        "daemon_directory": DAEMON_DIRECTORY,
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "mx.test",
        "mydomain": "test",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "relayhost": "",
        "alias_maps": "",
        "alias_database": "",
        "smtputf8_enable": "no",
        "biff": "no",
        "maillog_file": str(root / "maillog"),
        "maillog_file_prefixes": str(root),
        "syslog_name": f"postfix-test-{port}",
        "smtpd_banner": "$myhostname ESMTP",
        # A test reads the outcome at once: no waiting between delivery attempts.
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
    }
    settings.update(main)
    (config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    smtpd = f"127.0.0.1:{port} inet n - n - - smtpd\n"
    (config_dir / "master.cf").write_text(smtpd + _SERVICES + master)
    instance = PostfixInstance(root, port)
    proc = subprocess.run([POSTFIX, "-c", str(config_dir), "start"], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"postfix start exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\n{instance.log()}")
    try:
        wait_for_port(port, timeout)
    except TimeoutError:
        instance.stop()
        raise AssertionError(f"Postfix's smtpd is not listening on {port}:\n{instance.log()}") from None
    return instance


def rcpt_reply(instance: PostfixInstance, sender: str, recipient: str, timeout: float = 60) -> tuple[int, str]:
    """The final reply to ``RCPT TO:<recipient>``, asked again while it is 450 (the address verification
    probe is still on its way), for up to ``timeout`` seconds."""

    def final() -> tuple[int, str] | None:
        client = instance.smtp()
        try:
            client.mail(sender)
            code, message = client.rcpt(recipient)
        finally:
            client.quit()
        return None if code == 450 else (code, message.decode(errors="replace"))

    return wait_until(final, timeout, interval=0.2, message=f"a final reply to RCPT TO:<{recipient}>")
