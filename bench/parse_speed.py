"""Parsing speed of pathological messages (from the timed tests it replaces; the tests check the results).

- ``parse_message`` of a message with 20,000 ids in References (~500 KB of header);
- ``parse_message`` of a 1 MB message: text, the same as HTML, a 300 KB base64 attachment;
- ``header:To:asAddresses`` of a To of 5,000 addresses with comments (~200 KB), and, for comparison, the
  same field through the standard library's modern parser (``email.policy.default``), once.

Each case runs ``--repeat`` times, in this process; figures are milliseconds per run.

    .venv/bin/python bench/parse_speed.py [--repeat 20]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as every benchmark (common.py expects it)

import base64  # noqa: E402
import email  # noqa: E402
import email.policy  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import common  # noqa: E402

from jmapmono.jmap.email_headers import header_value  # noqa: E402
from jmapmono.mailbox.mime import parse_message  # noqa: E402
from jmapmono.mailbox.mime_tree import parse_mime  # noqa: E402
from tests.support.corpus import message  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` runs of ``fn``."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def one_megabyte() -> bytes:
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2 + "\r\n") * 5000
    attachment = base64.encodebytes(random.Random(1).randbytes(300_000)).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<div>" + text.encode() + b"</div>\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + attachment
        + b"--b--\r\n"
    )


def main(argv: list[str]) -> None:
    repeat = common.arg_int(argv, "repeat", 20)
    common.banner(f"MIME parsing of pathological messages, {repeat} runs each")
    figures = common.Figures("parse_speed")
    references = message("huge_references")
    figures.latency(
        f"parse_message, 20,000 References ({len(references) // 1000} KB)",
        timed(lambda: parse_message(references), repeat),
    )
    big = one_megabyte()
    figures.latency("parse_message, 1 MB text + HTML + attachment", timed(lambda: parse_message(big), repeat))
    to = ", ".join(f'"User {i}" <user{i}@example.com> (c{i})' for i in range(5000)).encode()
    raw = b"To: " + to + b"\r\n\r\nbody\r\n"
    parsed = parse_mime(raw)
    figures.latency(
        "header:To:asAddresses, 5,000 addresses", timed(lambda: header_value(parsed, "header:To:asAddresses"), repeat)
    )
    stdlib = email.message_from_bytes(raw, policy=email.policy.default)
    figures.latency("stdlib email.policy.default, the same To (once)", timed(lambda: stdlib["To"].addresses, 1))


if __name__ == "__main__":
    main(sys.argv[1:])
