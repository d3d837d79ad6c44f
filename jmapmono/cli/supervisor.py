"""A supervised child process: restarted with back-off when it dies, stopped on request.

``serve`` runs the LMTP listener this way: it is asyncio (aiosmtpd) and must never run in the
gevent-patched serving process, so it is ``python -m jmapmono lmtp`` in a process of its own.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.metrics_dir import mark_process_dead

log = logging.getLogger("jmapmono.server")  # the logger name operators grep for

#: Seconds the LMTP child gets to finish a delivery in progress before it is killed.
CHILD_STOP_TIMEOUT = 15.0


class ChildSupervisor:
    """Keeps one child process running: restarted with back-off when it dies, stopped on request."""

    #: A child that ran this long resets the back-off.
    HEALTHY_SECONDS = 10.0
    MAX_DELAY = 30.0

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> None:
        from gevent.event import Event

        self.name = name
        self.argv = argv
        self.env = env
        #: File descriptors the child inherits (a ``serve`` worker's listening socket).
        self.pass_fds = pass_fds
        self.proc: Any = None
        self._stopping = Event()
        self._greenlet: Any = None

    def start(self) -> None:
        import gevent

        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import subprocess  # gevent-patched: waiting on the child yields to other greenlets

        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True, pass_fds=self.pass_fds)
            except OSError as e:
                log.error(kv(event="child_start_failed", child=self.name, error=str(e)))
            else:
                if self._stopping.is_set():
                    self._terminate(self.proc)
                    return
                log.info(kv(event="child_started", child=self.name, pid=self.proc.pid))
                code = self.proc.wait()
                if self._stopping.is_set():
                    return
                ran = time.monotonic() - started
                log.warning(kv(event="child_exited", child=self.name, pid=self.proc.pid, code=code, ran_s=f"{ran:.1f}"))
                mark_process_dead(self.proc.pid)
            ran = time.monotonic() - started
            failures = 0 if ran >= self.HEALTHY_SECONDS else failures + 1
            delay = min(self.MAX_DELAY, 0.5 * 2 ** max(0, failures - 1))
            self._stopping.wait(delay)

    def _terminate(self, proc: Any, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        import subprocess

        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(kv(event="child_killed", child=self.name, pid=proc.pid))
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop restarting; terminate the child (SIGTERM, then SIGKILL after the grace time)."""
        self._stopping.set()
        if self.proc is not None:
            self._terminate(self.proc)
        if self._greenlet is not None:
            self._greenlet.join(timeout=CHILD_STOP_TIMEOUT)
        if self.proc is not None:
            log.info(kv(event="child_stopped", child=self.name, pid=self.proc.pid, code=self.proc.returncode))
            mark_process_dead(self.proc.pid)


def child_python_path(environ: Mapping[str, str] = os.environ) -> str:
    """``PYTHONPATH`` for a ``sys.executable -m jmapmono`` child, so that it imports this same jmapmono.

    Run from a source tree, the directory holding the ``jmapmono`` package goes first (the child may
    start elsewhere than this process did). Installed, that directory is one the interpreter searches
    anyway (site-packages), and is left out: on ``PYTHONPATH`` it would come before the standard library.
    """
    import site
    import sysconfig

    import jmapmono

    holder = Path(jmapmono.__file__).resolve().parent.parent
    searched = {*site.getsitepackages(), site.getusersitepackages()}
    searched |= {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    installed = holder in {Path(p).resolve() for p in searched if p}
    return os.pathsep.join(p for p in (None if installed else str(holder), environ.get("PYTHONPATH")) if p)


def child_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m jmapmono`` child on this process's database and code."""
    env = dict(os.environ, DATABASE_URL=config.database_url, **extra)
    env.pop("PYTHONPATH", None)
    python_path = child_python_path()
    if python_path:
        env["PYTHONPATH"] = python_path
    return env


def lmtp_child(config: Config, listen: str) -> ChildSupervisor:
    """The supervisor of the LMTP listener child, on this process's database."""
    env = child_env(config, JMAPMONO_LMTP_LISTEN=listen)
    argv = [sys.executable, "-m", "jmapmono", "lmtp", "--listen", listen, "--exit-with-parent"]
    return ChildSupervisor("lmtp", argv, env)
