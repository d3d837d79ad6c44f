"""A private nginx in front of jmapmono, TLS terminated there, configured by the shipped conf/nginx/jmapmono.conf.

The shipped file is rendered with the test's own values in place of what a user edits (the node addresses, the
certificate paths) and of the listening address (``127.0.0.1:PORT`` for ``443``; the IPv6 ``listen`` is dropped),
then included from a top-level configuration of this module: its own prefix, pid, logs and temp paths, nothing of
the machine's nginx (``/etc/nginx``, ports 80 and 443) read or touched. As root, nginx's workers run as ``nobody``
like Debian's run as ``www-data``. The certificate is self-signed for ``127.0.0.1`` (``ssl_context()`` trusts it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
from pathlib import Path

from tests.support import certificates
from tests.support.servers import ROOT, _stop_process, free_port, require, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHIPPED = ROOT / "conf" / "nginx" / "jmapmono.conf"
#: nginx's temp paths (a body or a response too large for memory is written there by the workers).
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
WORKER_USER = ("nobody", "nogroup")


def nginx_unavailable() -> str | None:
    """Why a private nginx cannot run here, or None."""
    if not os.path.exists(NGINX):
        return "nginx is not installed (Debian: apt-get install nginx; `make test` installs it as root)"
    return None


def require_nginx() -> None:
    """Skip the calling test when nginx is not installed; under ``CI=true`` fail instead."""
    require(nginx_unavailable())


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for mail.example.org and ``127.0.0.1`` and its key, as PEM files in ``directory``."""
    return certificates.self_signed(directory, "mail.example.org", "127.0.0.1")


def _replace(pattern: str, repl: str, text: str, what: str, required: bool = True) -> str:
    new, count = re.subn(pattern, repl, text, flags=re.M)
    assert count >= 1 or not required, f"conf/nginx/jmapmono.conf has no {what} (pattern {pattern!r})"
    return new


def render_site(text: str, port: int, nodes: list[int], cert: Path, key: Path) -> str:
    """The shipped file with this test's values: listen on ``127.0.0.1:port``, the ``nodes`` (loopback ports)
    in the upstream, the certificate and key at ``cert`` and ``key``. Everything else is left as shipped."""
    servers = "".join(f"    server 127.0.0.1:{node};\n" for node in nodes)
    text = _replace(r"^(upstream jmapmono \{\n)(?:\s*server [^;]+;\n)+", rf"\g<1>{servers}", text, "upstream jmapmono")
    text = _replace(r"^\s*listen \[[^\n]*\n", "", text, "IPv6 listen line", required=False)
    text = _replace(r"^(\s*listen )443( [^;\n]*)?;", rf"\g<1>127.0.0.1:{port}\g<2>;", text, "listen 443 line")
    text = _replace(r"^(\s*ssl_certificate )[^;\n]+;", rf"\g<1>{cert};", text, "ssl_certificate")
    return _replace(r"^(\s*ssl_certificate_key )[^;\n]+;", rf"\g<1>{key};", text, "ssl_certificate_key")


def top_level(prefix: Path, site: Path) -> str:
    """nginx.conf around the site: this instance's pid, logs and temp paths."""
    temp = "".join(f"    {name}_temp_path {prefix / 'temp' / name};\n" for name in TEMP_PATHS)
    user = f"user {' '.join(WORKER_USER)};\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}    include {site};\n}}\n"
    )


class NginxServer:
    """nginx with the shipped site on ``127.0.0.1:port`` (HTTPS) in front of ``nodes`` (loopback ports)."""

    def __init__(self, nodes: list[int], port: int | None = None) -> None:
        self.port = port or free_port()
        # Not under pytest's tmp_path: as root, the workers (nobody) must reach their temp paths.
        self.prefix = Path(tempfile.mkdtemp(prefix="jmapmono-nginx-"))
        self.proc: subprocess.Popen | None = None
        try:
            self._start(nodes)
        except BaseException:
            self.stop()
            raise

    def _start(self, nodes: list[int]) -> None:
        self.prefix.chmod(0o711)
        for name in TEMP_PATHS:
            (self.prefix / "temp" / name).mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(self.prefix / "temp" / name, *WORKER_USER)
        self.cert, key = self_signed(self.prefix)
        site = self.prefix / "jmapmono.conf"
        site.write_text(render_site(SHIPPED.read_text(), self.port, nodes, self.cert, key))
        conf = self.prefix / "nginx.conf"
        conf.write_text(top_level(self.prefix, site))
        argv = [NGINX, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(conf)]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"nginx -t refused the rendered configuration:\n{checked.stderr}"
        self.proc = subprocess.Popen(
            [*argv, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, 15, self.proc)
        except Exception:
            raise AssertionError(f"nginx did not start:\n{self.error_log()}") from None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate alone (and checks the host name)."""
        return ssl.create_default_context(cafile=str(self.cert))

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx (its workers with it) and remove its prefix."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 15, group=True)
        shutil.rmtree(self.prefix, ignore_errors=True)
