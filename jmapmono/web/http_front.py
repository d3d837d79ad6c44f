"""The HTTP/1.1 front of every deployment form: gevent's WSGI server with a strict request parser.

``serve`` (jmapmono/cli/serve.py) and the gunicorn worker of the Procfile (jmapmono/web/gunicorn_worker.py)
both run :class:`StrictWSGIServer`, so one parser faces the network. Behind a proxy, a request that two
parsers could frame differently is a request-smuggling vector (RFC 9112 §11.2), so anything ambiguous is
refused before the app runs, with a problem document, and the connection is closed:

- the request line is ``METHOD SP target SP HTTP/1.0|HTTP/1.1 CRLF``, the target in origin or absolute form;
- a field line is a token, ``:`` right after it, a value without control characters, then CRLF; no obs-fold;
  at most :data:`MAX_FIELDS` fields and :data:`MAX_HEAD_BYTES` (431 beyond);
- HTTP/1.1 carries exactly one valid Host;
- Content-Length is one field of digits, never next to Transfer-Encoding, which may only be ``chunked``
  (HTTP/1.1 only); a chunked body has hex sizes of at most 16 digits and :data:`MAX_CHUNK_SIZE`, bounded
  extensions and trailers, and CRLF after each chunk;
- a Content-Encoding other than identity → 415 (request bodies are never decoded); an expectation other
  than ``100-continue`` → 417.

A framing error found while the app reads the body turns its answer into a 400 and closes the connection.
A request head must arrive within ``idle_timeout`` seconds, which also bounds an idle keep-alive connection.
Requests are logged by the app; this front logs only what it refuses (``event=http_refused``).
"""

from __future__ import annotations

import json
import logging
import re
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import gevent
from gevent import pywsgi
from werkzeug.exceptions import BadRequest

from jmapmono.log import kv

log = logging.getLogger("jmapmono.http")

MAX_REQUEST_LINE = 8192  # pywsgi's: longer → 414
MAX_FIELD_LINE = 8192
MAX_FIELDS = 100
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_CHUNK_SIZE = 2**31 - 1
#: Chunk extension octets one body may carry in all (ignored, but read).
MAX_CHUNK_EXTENSIONS = 64 * 1024
MAX_TRAILER_BYTES = 8192
#: Unread body octets skipped after a response to keep the connection; beyond, the connection is closed.
MAX_DISCARD = 256 * 1024
#: One read from the socket never asks for more than this (a body may still be larger).
READ_PIECE = 1 << 20
#: Seconds, octets: after a refusal, what the client still sends is read and dropped for this long, so that
#: closing does not reset the connection before the client has read the answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
#: Blank lines tolerated before a request line (RFC 9112 §2.2: after a body, some clients send a CRLF).
MAX_BLANK_LINES = 4
DEFAULT_IDLE_TIMEOUT = 60.0
#: A response body up to this size is written with its head in one system call.
COALESCE_BODY = 65536

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([!-~]+) HTTP/(1\.[01])\r\n")
_FIELD = re.compile(rf"({_TOKEN}):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r\n")
_FIELD_BYTES = re.compile(_FIELD.pattern.encode("latin-1"))
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?")
_ABSOLUTE = re.compile(r"[hH][tT][tT][pP][sS]?://([^/?#]*)([^#]*)")
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rf"([0-9A-Fa-f]{{1,16}})((?:[ \t]*;[ \t]*{_TOKEN}(?:[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))?)*)\r\n".encode("latin-1")
)
_DIGITS = re.compile(r"[0-9]{1,18}")

_TITLES = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
}


class Refusal(Exception):
    """A request refused before the app runs: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


if TYPE_CHECKING:
    _InvalidClientInput = OSError
else:
    _InvalidClientInput = pywsgi._InvalidClientInput


class FramingError(_InvalidClientInput, BadRequest):
    """The body's framing is broken: pywsgi answers its own kind of this with 400 and closes; to an app that
    reads the body it is werkzeug's 400 Bad Request (an HTTP error, not a failure of the app)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.description = detail


def problem_body(status: int, detail: str) -> bytes:
    """An RFC 9457 problem document, as the app answers its own errors."""
    title = _TITLES.get(status, "Bad Request")
    return json.dumps({"type": "about:blank", "status": status, "title": title, "detail": detail}).encode()


def refusal_bytes(refusal: Refusal) -> bytes:
    """The whole response to a refusal: status line, fields, problem document."""
    body = problem_body(refusal.status, refusal.detail)
    head = [f"HTTP/1.1 {refusal.status} {_TITLES.get(refusal.status, 'Bad Request')}"]
    head += ["Content-Type: application/problem+json", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in refusal.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class StrictInput(pywsgi.Input):
    """``wsgi.input`` with a strict chunked decoder; a framing error sticks and is remembered in ``failure``."""

    __slots__ = ("failure", "abandoned", "extension_bytes")

    def __init__(self, rfile: Any, content_length: int | None, socket: Any = None, chunked_input: bool = False):
        super().__init__(rfile, content_length, socket=socket, chunked_input=chunked_input)
        self.failure: str | None = None
        #: Left unread after the response (too much, or a 100-continue never sent): close the connection.
        self.abandoned = False
        self.extension_bytes = 0

    def _fail(self, detail: str) -> FramingError:
        self.failure = detail
        self._chunked_input_error = True  # pywsgi then discards nothing
        return FramingError(detail)

    def read_chunk_header(self) -> None:
        """Read a chunk-size line (and the trailers after the last chunk)."""
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\r\n"):
            raise self._fail("a chunk-size line is too long or not ended by CRLF")
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise self._fail("a chunk size is not 1 to 16 hex digits with well-formed extensions")
        size = int(match.group(1), 16)
        if size > MAX_CHUNK_SIZE:
            raise self._fail(f"a chunk is larger than {MAX_CHUNK_SIZE} octets")
        self.extension_bytes += len(match.group(2))
        if self.extension_bytes > MAX_CHUNK_EXTENSIONS:
            raise self._fail("too many chunk extension octets")
        self.chunk_length, self.position = size, 0
        if size == 0:
            self._read_trailers()

    def _read_trailers(self) -> None:
        total = 0
        while True:
            line = self.rfile.readline(MAX_TRAILER_BYTES + 1)
            total += len(line)
            if total > MAX_TRAILER_BYTES:
                raise self._fail(f"the trailer section exceeds {MAX_TRAILER_BYTES} octets")
            if line == b"\r\n":
                return
            if _FIELD_BYTES.fullmatch(line) is None:
                raise self._fail("a malformed trailer field")

    def _chunked_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        if self.failure is not None:
            raise FramingError(self.failure)
        self._send_100_continue()  # type: ignore[attr-defined]  # pywsgi's, not in its stubs
        if length == 0:
            return b""
        reader = self.rfile.readline if use_readline else self.rfile.read
        out: list[bytes] = []
        while self.chunk_length != 0:
            if self.chunk_length < 0:  # between chunks
                self.read_chunk_header()
                continue
            want = min(self.chunk_length - self.position, READ_PIECE)
            if length is not None:
                want = min(want, length)
            data = reader(want)
            if not data:
                raise self._fail("the body ended inside a chunk")
            out.append(data)
            self.position += len(data)
            if self.position == self.chunk_length:
                if self.rfile.read(2) != b"\r\n":
                    raise self._fail("a chunk's data is not followed by CRLF")
                self.chunk_length = -1
            if length is not None:
                length -= len(data)
                if length == 0:
                    break
            if use_readline and data.endswith(b"\n"):
                break
        return b"".join(out)

    def read(self, length: int | None = None) -> bytes:
        if self.chunked_input or (length is not None and 0 <= length <= READ_PIECE):
            return super().read(length)
        out: list[bytes] = []  # a large Content-Length read in pieces: memory follows what arrives
        while length is None or length < 0 or length > 0:
            piece = super().read(READ_PIECE if length is None or length < 0 else min(length, READ_PIECE))
            if not piece:
                break
            out.append(piece)
            if length is not None and length > 0:
                length -= len(piece)
        return b"".join(out)

    def _discard(self) -> None:
        if self.failure is not None or self._chunked_input_error:
            return
        if self.socket is not None and self.send_100_continue_enabled and (self.content_length or self.chunked_input):
            self.abandoned = True  # the client waits for a 100 it will not get: its body never comes
            return
        self.send_100_continue_enabled = False
        left = MAX_DISCARD
        while left > 0:
            data = self.read(min(16384, left))
            if not data:
                return
            left -= len(data)
        self.abandoned = self.read(1) != b""


class _Fields:
    """The request's header fields as received (pywsgi's ``handler.headers`` interface, read-only)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        return next((v for n, v in self.fields if n.lower() == lname), default)

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.fields if n.lower() == lname]

    def items(self) -> list[tuple[str, str]]:
        return list(self.fields)


def _tokens(values: list[str]) -> list[str]:
    """The elements of comma-separated list fields, lower-cased, empty elements skipped."""
    return [t.strip().lower() for value in values for t in value.split(",") if t.strip()]


class StrictHandler(pywsgi.WSGIHandler):
    """gevent's WSGI handler with the request parsing of this module (see its docstring)."""

    wsgi_input: StrictInput | None = None
    _fields: _Fields = _Fields([])
    _host = ""
    _upgrade = False
    _expect_continue = False
    _chunked = False

    # -- the request head -------------------------------------------------------------------------------------

    def _idle_timeout(self) -> float:
        return float(getattr(self.server, "idle_timeout", DEFAULT_IDLE_TIMEOUT))

    def _closing(self) -> bool:
        return bool(getattr(self.server, "closed", False))

    def read_requestline(self) -> str:
        if self._closing():
            return ""  # shutting down: no next request on this connection
        idle: set[StrictHandler] = getattr(self.server, "idle_handlers", set())
        idle.add(self)
        timer = gevent.Timeout(self._idle_timeout())
        timer.start()
        try:
            for _ in range(MAX_BLANK_LINES):
                line = self.rfile.readline(MAX_REQUEST_LINE)
                if line != b"\r\n":
                    break
            return line.decode("latin-1")
        except gevent.Timeout as e:
            if e is not timer:
                raise
            return ""  # silent for too long: close quietly
        finally:
            timer.close()
            idle.discard(self)

    def end_idle(self) -> None:
        """Wake a connection waiting for its next request, so that it ends (the server is stopping). The read
        side is shut down under the handler, which then reads end of file (gevent's own ``shutdown`` would
        cancel the wait with an error instead)."""
        try:
            raw = socket.socket(fileno=self.socket.fileno())
        except (OSError, AttributeError):
            return
        try:
            raw.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        finally:
            raw.detach()  # the descriptor stays the handler's to close

    def read_request(self, raw_requestline: str) -> bool:  # type: ignore[override]  # pywsgi's stubs say otherwise
        timer = gevent.Timeout(self._idle_timeout())
        timer.start()
        try:
            self._parse_request(raw_requestline)
        except gevent.Timeout as e:
            if e is not timer:
                raise
            raise Refusal(408, "the request head or body start did not arrive in time") from None
        finally:
            timer.close()
        return True

    def _parse_request(self, raw_requestline: str) -> None:
        match = _REQUEST_LINE.fullmatch(raw_requestline)
        if match is None:
            raise Refusal(400, "the request line must be METHOD SP target SP HTTP/1.1 CRLF (RFC 9112 §3)")
        self.requestline = raw_requestline[:-2]
        self.command, target, version = match.groups()
        self.request_version = f"HTTP/{version}"
        fields = self._read_fields()
        self._fields = fields
        self.headers = fields  # type: ignore[assignment]  # pywsgi's interface, as read-only fields
        hosts = fields.get_all("host")
        if version == "1.1" and len(hosts) != 1:
            raise Refusal(400, "an HTTP/1.1 request carries exactly one Host field (RFC 9112 §3.2)")
        if len(hosts) > 1 or (hosts and _HOST.fullmatch(hosts[0]) is None):
            raise Refusal(400, "the Host field is not a valid host[:port]")
        self._host = hosts[0] if hosts else ""
        self.path = self._origin_form(target)
        self._framing(fields, version)
        codings = _tokens(fields.get_all("content-encoding"))
        if any(c != "identity" for c in codings):
            raise Refusal(
                415, "request bodies must not be content-encoded (Content-Encoding)", (("Accept-Encoding", "identity"),)
            )
        expectations = _tokens(fields.get_all("expect"))
        if expectations and version == "1.1" and expectations != ["100-continue"]:
            raise Refusal(417, "the only expectation supported is 100-continue")
        self._expect_continue = expectations == ["100-continue"] and version == "1.1"
        upgrade = self.command == "GET" and "websocket" in _tokens(fields.get_all("upgrade"))
        self._upgrade = upgrade
        if upgrade and (self._chunked or self.content_length):
            raise Refusal(400, "an upgrade request has no body")
        connection = _tokens(fields.get_all("connection"))
        self.close_connection = "close" in connection if version == "1.1" else "keep-alive" not in connection
        sock = self.socket if self._expect_continue else None
        self.wsgi_input = StrictInput(self.rfile, self.content_length, socket=sock, chunked_input=self._chunked)
        if self._chunked and not self._expect_continue:
            # The first chunk line is read now, so that a malformed one is refused whatever the app does.
            try:
                self.wsgi_input.read_chunk_header()
            except FramingError as e:
                raise Refusal(400, str(e)) from None

    def _read_fields(self) -> _Fields:
        fields: list[tuple[str, str]] = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_FIELD_LINE + 1)
            total += len(line)
            if len(line) > MAX_FIELD_LINE or total > MAX_HEAD_BYTES:
                raise Refusal(431, f"a field line exceeds {MAX_FIELD_LINE} octets or the head {MAX_HEAD_BYTES}")
            if line == b"\r\n":
                return _Fields(fields)
            if line[:1] in (b" ", b"\t"):
                raise Refusal(400, "obsolete line folding is not accepted (RFC 9112 §5.2)")
            match = _FIELD.fullmatch(line.decode("latin-1"))
            if match is None:
                raise Refusal(400, "a header field line must be name:value CRLF, no space before the colon")
            fields.append((match.group(1), match.group(2)))
            if len(fields) > MAX_FIELDS:
                raise Refusal(431, f"more than {MAX_FIELDS} header fields")

    def _origin_form(self, target: str) -> str:
        """The path and query of ``target``; for the absolute form, its authority replaces Host."""
        if target.startswith("/"):
            return target
        if target == "*" and self.command == "OPTIONS":
            return target
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            raise Refusal(400, "the request target must be an absolute path or an http(s) URI")
        authority, rest = absolute.groups()
        if "@" in authority or not authority or _HOST.fullmatch(authority) is None:
            raise Refusal(400, "the request target's authority is not a valid host[:port]")
        self._host = authority  # RFC 9112 §3.2.2
        return rest if rest.startswith("/") else "/" + rest

    def _framing(self, fields: _Fields, version: str) -> None:
        """Set ``content_length`` and ``_chunked`` from the framing fields, refusing every ambiguity."""
        lengths = fields.get_all("content-length")
        encodings = fields.get_all("transfer-encoding")
        self._chunked = False
        self.content_length = None  # type: ignore[assignment]  # pywsgi's stubs say int; None is "no body"
        if encodings:
            if version == "1.0":
                raise Refusal(400, "Transfer-Encoding is not defined for HTTP/1.0")
            if lengths:
                raise Refusal(400, "Content-Length and Transfer-Encoding together (RFC 9112 §6.3)")
            if _tokens(encodings) != ["chunked"]:
                raise Refusal(400, "the only transfer coding supported is chunked, once")
            self._chunked = True
        if lengths:
            if len(lengths) != 1 or _DIGITS.fullmatch(lengths[0]) is None:
                raise Refusal(400, "Content-Length must be one field of 1 to 18 digits")
            self.content_length = int(lengths[0])

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        gone = isinstance(ex, OSError) and not isinstance(ex, FramingError)  # the client left mid-head
        if not isinstance(ex, Refusal):
            ex = Refusal(400, str(ex) or "malformed request")
        if not gone:
            ip = self.client_address[0] if isinstance(self.client_address, tuple) else self.client_address
            log.info(kv(event="http_refused", status=ex.status, reason=ex.detail, ip=ip))
        return str(ex.status), refusal_bytes(ex)

    def _connection_upgrade_requested(self) -> bool:
        return self._upgrade

    # -- the WSGI environment ---------------------------------------------------------------------------------

    def get_environ(self) -> dict[str, Any]:
        env = self.server.get_environ()
        env["REQUEST_METHOD"] = self.command
        env["SCRIPT_NAME"] = ""
        path, _, query = (self.path or "/").partition("?")
        env["PATH_INFO"] = unquote(path, encoding="latin-1")
        env["QUERY_STRING"] = query
        content_type = self._fields.get("content-type")
        if content_type is not None:
            env["CONTENT_TYPE"] = content_type
        if self.content_length is not None:
            env["CONTENT_LENGTH"] = str(self.content_length)
        env["SERVER_PROTOCOL"] = self.request_version
        if isinstance(self.client_address, tuple):
            env["REMOTE_ADDR"] = str(self.client_address[0])
            env["REMOTE_PORT"] = str(self.client_address[1])
        for name, value in self._fields.fields:
            if "_" in name:  # X_Forwarded_For must not pass for X-Forwarded-For
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_HOST"):
                continue
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
            else:
                env[key] = value
        env["HTTP_HOST"] = self._host
        # An upgrade gets the raw reader: the WebSocket takes the socket from it (jmapmono/web/websocket.py).
        env["wsgi.input"] = self.rfile if self._upgrade else self.wsgi_input
        env["wsgi.input_terminated"] = not self._upgrade
        return env

    # -- the response -----------------------------------------------------------------------------------------

    def _input_failure(self) -> str | None:
        return self.wsgi_input.failure if self.wsgi_input is not None else None

    def process_result(self) -> None:
        failure = self._input_failure()
        if failure is not None and not self.headers_sent:
            # Whatever the app made of a broken body (often a 500), the client gets the 400 it caused.
            self._handle_client_error(FramingError(failure))
            self._write_problem(400, failure)
            return
        super().process_result()

    def _write_with_headers(self, data: bytes) -> None:
        """The response head and a body of up to :data:`COALESCE_BODY` octets in one write: one system call
        and one wake-up of the client instead of two (pywsgi writes them apart)."""
        handler: Any = self  # pywsgi keeps the status and headers as latin-1 bytes; its stubs say str
        handler.headers_sent = True
        handler.finalize_headers()
        head = bytearray(b"HTTP/1.1 ")
        head += handler.status
        head += b"\r\n"
        for name, value in handler.response_headers:
            head += name
            head += b": "
            head += value
            head += b"\r\n"
        head += b"\r\n"
        if data and not handler.response_use_chunked and len(data) <= COALESCE_BODY:
            head += data
            handler._sendall(head)
            return
        handler._sendall(head)
        handler._write(data)

    def _write_problem(self, status: int, detail: str) -> None:
        body = problem_body(status, detail)
        headers = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
        self.start_response(f"{status} {_TITLES[status]}", [*headers, ("Connection", "close")])
        self.close_connection = True
        self.write(body)

    def _send_error_response_if_possible(self, error_code: int) -> None:
        failure = self._input_failure()
        if failure is None or self.response_length:
            super()._send_error_response_if_possible(error_code)  # type: ignore[misc]  # pywsgi's, not in its stubs
            return
        try:
            self._write_problem(400, failure)
        except OSError:
            self.close_connection = True

    def handle_one_response(self) -> None:
        super().handle_one_response()
        if self.wsgi_input is not None and (self.wsgi_input.failure is not None or self.wsgi_input.abandoned):
            self.close_connection = True

    def handle_one_request(self) -> Any:
        self.wsgi_input = None
        result = super().handle_one_request()
        if isinstance(result, tuple):  # refused before the app: answer, then close
            try:
                self.socket.sendall(result[1])
            except OSError:
                return None
            self.status = result[0]
            self._linger()
            return None
        if result is True and self._closing():
            return None  # the server is stopping: this response was the connection's last
        if result is None and self.socket is not None and not self.rfile.closed:
            if self.wsgi_input is not None and (self.wsgi_input.failure is not None or self.wsgi_input.abandoned):
                self._linger()
        return result

    def _linger(self) -> None:
        """Close our side, then drop what the client still sends for a moment: an immediate close with unread
        data resets the connection, and the client could lose the answer it has not read yet."""
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            return
        left = LINGER_BYTES
        timer = gevent.Timeout(LINGER_SECONDS)
        timer.start()
        try:
            while left > 0:
                data = self.socket.recv(min(65536, left))
                if not data:
                    break
                left -= len(data)
        except gevent.Timeout as e:
            if e is not timer:
                raise
        except OSError:
            pass
        finally:
            timer.close()

    def log_request(self) -> None:
        """No access log: the app writes one line per request (jmapmono/web/app.py)."""


class StrictWSGIServer(pywsgi.WSGIServer):
    """gevent's WSGI server on :class:`StrictHandler`, with TCP_NODELAY and no access log of its own."""

    handler_class = StrictHandler

    def __init__(
        self, listener: Any, application: Any = None, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, **kw: Any
    ) -> None:
        kw["log"] = None  # the app logs each request; refusals are logged by the handler
        kw.setdefault("error_log", logging.getLogger("jmapmono.http"))
        kw["handler_class"] = kw.get("handler_class") or StrictHandler
        super().__init__(listener, application, **kw)
        self.idle_timeout = idle_timeout
        #: Handlers of keep-alive connections waiting for their next request (ended at ``close``).
        self.idle_handlers: set[StrictHandler] = set()

    def close(self) -> None:
        """Stop accepting, and end the keep-alive connections that wait for a request: a stop (``serve``'s,
        or a gunicorn worker's graceful one) then waits only for requests in progress."""
        super().close()
        for handler in list(self.idle_handlers):
            handler.end_idle()

    def init_socket(self) -> None:
        super().init_socket()
        # pywsgi writes a response's headers and body in two sends: without TCP_NODELAY (inherited by
        # accepted sockets), Nagle and the client's delayed ACK add ~40 ms to every keep-alive request.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
