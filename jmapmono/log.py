"""Logging: one line per event, ``key=value`` pairs, at INFO by default.

Callers log ``event=… user=… ms=…`` so an operator can grep who did what and how
long it took. :func:`kv` quotes values that contain spaces, and no value can break
a line: user names, addresses and exception texts come from outside, and a CR or LF
in one would otherwise forge a second, believable event. The process's handler
(:func:`setup_logging`) escapes control characters in whatever is formatted
(``%s``-style messages, tracebacks), so one event is always one line.
"""

from __future__ import annotations

import logging
import re
import sys
import time

#: Every line: time, level, logger, message (the formatter builds exactly this one itself).
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each written as an escape.
_ESCAPES = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
}

#: What makes a value quoted: a space, a quote, ``=``, a backslash, or any character escaped above.
_NEEDS_QUOTES = re.compile('[ "=\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character (and U+2028/U+2029) written as a backslash escape."""
    return text.translate(_ESCAPES) if _CONTROLS.search(text) else text  # searching is 10x cheaper


def kv(**fields: object) -> str:
    """Format fields as ``k=v`` pairs; values with spaces, quotes, backslashes or control characters are
    quoted, with those characters escaped."""
    parts = []
    for key, value in fields.items():
        text = "-" if value is None else str(value)
        if not text or _NEEDS_QUOTES.search(text):
            text = '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class OneLineFormatter(logging.Formatter):
    """The standard format, with control characters escaped: a message or traceback stays on its line.

    With the process's format (:data:`LINE_FORMAT`) a line is put together directly, its date formatted once
    per second: the same text as the standard formatter's, at a third of its cost (every API request logs)."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._direct = fmt == LINE_FORMAT
        self._second = -1
        self._date = ""

    def format(self, record: logging.LogRecord) -> str:
        if not self._direct or record.exc_info or record.exc_text or record.stack_info:
            return escape_controls(super().format(record))
        second = int(record.created)
        if second != self._second:
            self._date = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        line = f"{self._date},{int(record.msecs):03d} {record.levelname} {record.name} {record.getMessage()}"
        return escape_controls(line)


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for the process (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_jmapmono", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter(LINE_FORMAT))
        handler._jmapmono = True  # type: ignore[attr-defined]  # our marker on a stdlib handler
        root.addHandler(handler)
    root.setLevel(level)
    # No format here or in gunicorn's names the thread or the calling function: not looking them up saves,
    # per line, a stack walk and, under gevent, a dummy thread object for each greenlet that logs.
    logging.logThreads = False
    logging._srcfile = None  # the documented switch: no findCaller per record
    for noisy in ("amqp", "kombu", "mail.log", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
