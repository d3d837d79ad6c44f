"""The strict HTTP/1.1 front, over raw sockets, in both deployment forms: ``serve`` and gunicorn (the Procfile's
worker class). Every malformed request gets exactly one 4xx and the connection closes: a proxy in front and
this server can never disagree on where a request ends (RFC 9112 §6.3, §11.2)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import add_user, start_gunicorn, start_serve

EMAIL = "front@example.org"
PASSWORD = "front password 1"
AUTH = "Basic " + base64.b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
ECHO = json.dumps({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": 1}, "0"]]}).encode()
#: Generous: a server that hangs instead of answering fails the test by timing out, never by luck.
READ_TIMEOUT = 30
IDLE_TIMEOUT = 3


@dataclass
class Front:
    kind: str
    port: int


@pytest.fixture(scope="module", params=["serve", "gunicorn"])
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """One server of each deployment form (its own SQLite database and one user) for the whole module."""
    tmp = tmp_path_factory.mktemp(request.param)
    url = f"sqlite:///{tmp / 'jmapmono.sqlite3'}"
    add_user(url, tmp / "data", EMAIL, PASSWORD)
    timeout = str(IDLE_TIMEOUT)
    if request.param == "serve":
        server = start_serve(url, tmp, lmtp=False, JMAPMONO_HTTP_IDLE_TIMEOUT=timeout)
        port = server.http_port
    else:
        server = start_gunicorn(url, tmp / "data", tmp, JMAPMONO_HTTP_IDLE_TIMEOUT=timeout)
        port = server.port
    yield Front(request.param, port)
    server.stop()
    log = _log(tmp)
    assert "Traceback" not in log, log


def _log(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("*.log")) + sorted(tmp.glob("*.err")))


def _head(*lines: str, version: str = "HTTP/1.1", target: str = "/jmap/api", method: str = "POST") -> bytes:
    return (f"{method} {target} {version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1")


def _echo(*fields: str, version: str = "HTTP/1.1") -> bytes:
    """An authenticated Core/echo with ``fields`` as its framing (a lenient server answers it 200)."""
    return _head(
        "Host: 127.0.0.1", f"Authorization: {AUTH}", "Content-Type: application/json", *fields, version=version
    )


def _chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)


N = len(ECHO)
HALF = N // 2
CHUNKED = "Transfer-Encoding: chunked"
MALFORMED: dict[str, tuple[bytes, int]] = {
    "two different Content-Length": (_echo(f"Content-Length: {N}", f"Content-Length: {N + 7}") + ECHO, 400),
    "two equal Content-Length": (_echo(f"Content-Length: {N}", f"Content-Length: {N}") + ECHO, 400),
    "signed Content-Length": (_echo(f"Content-Length: +{N}") + ECHO, 400),
    "chunk size not hex": (_echo(CHUNKED) + b"zz\r\n" + ECHO + b"\r\n0\r\n\r\n", 400),
    "chunk size overflows 64 bits": (_echo(CHUNKED) + b"F" * 16 + b"\r\n" + ECHO + b"\r\n0\r\n\r\n", 400),
    "chunk size of 20 digits": (_echo(CHUNKED) + b"0" * 18 + b"1F\r\n" + ECHO + b"\r\n0\r\n\r\n", 400),
    "second chunk size not hex": (
        _echo(CHUNKED) + _chunked(ECHO[:HALF]) + b"1x\r\n" + ECHO[HALF:] + b"\r\n0\r\n\r\n",
        400,
    ),
    "chunk data without CRLF": (_echo(CHUNKED) + b"%x\r\n" % N + ECHO + b"XX0\r\n\r\n", 400),
    "malformed trailer": (_echo(CHUNKED) + _chunked(ECHO) + b"0\r\nno colon here\r\n\r\n", 400),
    "chunk extension too long": (_echo(CHUNKED) + b"%x;x=%s\r\n" % (N, b"a" * 5000) + ECHO + b"\r\n0\r\n\r\n", 400),
    "Content-Encoding gzip on a plain body": (_echo(f"Content-Length: {N}", "Content-Encoding: gzip") + ECHO, 415),
    "unknown Transfer-Encoding": (_echo("Transfer-Encoding: x-custom", f"Content-Length: {N}") + ECHO, 400),
    "gzip before chunked": (_echo("Transfer-Encoding: gzip, chunked") + _chunked(ECHO) + b"0\r\n\r\n", 400),
    "chunked twice": (_echo("Transfer-Encoding: chunked, chunked") + _chunked(ECHO) + b"0\r\n\r\n", 400),
    "Content-Length and chunked": (_echo(CHUNKED, f"Content-Length: {N}") + _chunked(ECHO) + b"0\r\n\r\n", 400),
    "chunked in HTTP/1.0": (_echo(CHUNKED, version="HTTP/1.0") + _chunked(ECHO) + b"0\r\n\r\n", 400),
    "HTTP/1.1 without Host": (
        _head(f"Authorization: {AUTH}", "Content-Type: application/json", f"Content-Length: {N}") + ECHO,
        400,
    ),
    "two Host fields": (_echo("Host: other.example", f"Content-Length: {N}") + ECHO, 400),
    "header line without colon": (_echo("X-Oops", f"Content-Length: {N}") + ECHO, 400),
    "space before the colon": (_echo(f"Content-Length : {N}") + ECHO, 400),
    "obsolete line folding": (_echo("X-Folded: a", " b", f"Content-Length: {N}") + ECHO, 400),
    "NUL in a field value": (_echo("X-Nul: a\x00b", f"Content-Length: {N}") + ECHO, 400),
    "bare LF line ends": (_echo(f"Content-Length: {N}").replace(b"\r\n", b"\n") + ECHO, 400),
    "unsupported expectation": (_echo(f"Content-Length: {N}", "Expect: 200-ok") + ECHO, 417),
    "HTTP/1.2": (_echo(f"Content-Length: {N}", version="HTTP/1.2") + ECHO, 400),
    "userinfo in an absolute target": (
        _head(
            "Host: 127.0.0.1", f"Authorization: {AUTH}", target="http://user@127.0.0.1/.well-known/jmap", method="GET"
        ),
        400,
    ),
}


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes (a socket timeout fails: the server hung)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return received
            received += chunk
    return received


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _replies(data: bytes) -> list[Reply]:
    """Every response in ``data`` (framed by Content-Length or chunked), interim 1xx ones included."""
    replies = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"a truncated response head: {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        status = int(lines[0].split()[1])
        if "content-length" in headers:
            length = int(headers["content-length"])
            body, data = data[:length], data[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            body = b""
        replies.append(Reply(status, headers, body))
    return replies


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_one_refusal_and_the_connection_closes(front, case):
    request, status = MALFORMED[case]
    # A well-formed request follows in the same write: were the malformed one mis-framed, it would be answered.
    follow = _echo(f"Content-Length: {N}") + ECHO
    replies = _replies(_exchange(front.port, request + follow))
    assert [r.status for r in replies] == [status], replies
    (reply,) = replies
    assert reply.headers["connection"] == "close"
    problem = json.loads(reply.body)
    assert problem["status"] == status and problem["detail"]


def test_a_slow_request_head_is_cut(front):
    # The head never ends: the server answers 408 after its idle timeout and closes (a hang fails by timing out).
    with socket.create_connection(("127.0.0.1", front.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(b"GET /.well-known/jmap HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert [r.status for r in _replies(received)] == [408]


# -- well-formed requests that must still pass ------------------------------------------------------------------------


def _echoed(reply: Reply) -> bool:
    return reply.status == 200 and json.loads(reply.body)["methodResponses"][0][0] == "Core/echo"


def test_chunked_body_with_extensions_and_a_trailer(front):
    body = b'%x;name="quoted value"\r\n%s\r\n' % (HALF, ECHO[:HALF]) + _chunked(ECHO[HALF:])
    body += b"0\r\nX-Checksum: abc\r\n\r\n"
    request = _echo(CHUNKED, "Connection: close") + body
    (reply,) = _replies(_exchange(front.port, request))
    assert _echoed(reply)


def test_keep_alive_pipelining_of_two_requests(front):
    first = _echo(f"Content-Length: {N}") + ECHO
    # Some clients send a stray CRLF after a body; it is ignored before the next request line (RFC 9112 §2.2).
    second = b"\r\n" + _echo(f"Content-Length: {N}", "Connection: close") + ECHO
    replies = _replies(_exchange(front.port, first + second))
    assert len(replies) == 2 and all(_echoed(r) for r in replies), replies


def test_expect_100_continue(front):
    with socket.create_connection(("127.0.0.1", front.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(_echo(f"Content-Length: {N}", "Expect: 100-continue", "Connection: close"))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(65536)
            assert chunk, "closed before the 100"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(ECHO)
        rest = interim.partition(b"\r\n\r\n")[2]
        while chunk := sock.recv(65536):
            rest += chunk
    (reply,) = _replies(rest)
    assert _echoed(reply)


def test_absolute_form_target_and_http_1_0(front):
    absolute = _head("Host: ignored.example", f"Authorization: {AUTH}", "Connection: close", method="GET")
    absolute = absolute.replace(b" /jmap/api ", f" http://127.0.0.1:{front.port}/.well-known/jmap ".encode())
    (reply,) = _replies(_exchange(front.port, absolute))
    assert reply.status == 200 and "apiUrl" in json.loads(reply.body)
    # HTTP/1.0: no Host needed, and the connection closes after the response.
    (reply,) = _replies(_exchange(front.port, _echo(f"Content-Length: {N}", version="HTTP/1.0") + ECHO))
    assert _echoed(reply)
