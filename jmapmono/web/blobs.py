"""Upload and download of binary data (RFC 8620 §6.1, §6.2).

``POST /jmap/upload/<accountId>/`` stores the request body as a blob held by the
uploader (see :mod:`jmapmono.mailbox.blobs` for who may read it and for how
long). The body is read in chunks and refused with 413 as soon as it exceeds
``maxSizeUpload`` (from Content-Length, or while streaming a chunked body), so
no more than the limit is ever buffered; more than ``maxConcurrentUpload``
uploads at once by one user (in this process) get 429.

``GET /jmap/download/<accountId>/<blobId>/<name>?type=…`` answers with the
bytes, ``Content-Type`` exactly the ``type`` parameter, an attachment
``Content-Disposition`` with the name, and immutable caching (ids are content
addresses): ETag is the blob id, ``If-None-Match`` gives 304, a single
``Range`` gives 206. The body streams from the store a slice at a time (with a
Content-Length), and more than ``JMAPMONO_MAX_CONCURRENT_DOWNLOADS`` downloads
at once by one user (in this process) get 429 with Retry-After. Every error is
an RFC 7807 problem document.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import REQUEST_ERROR_PREFIX
from jmapmono.log import kv
from jmapmono.mailbox.blobs import BlobGone, BlobReader, is_valid_blob_id
from jmapmono.store import StoreError
from jmapmono.web.auth import require_auth
from jmapmono.web.context import current_services

log = logging.getLogger("jmapmono.blobs")

bp = Blueprint("blobs", __name__)


class FileNameConverter(PathConverter):
    """Any non-empty name, slashes and line breaks included (they are made safe in Content-Disposition)."""

    regex = "[^/][\\s\\S]*?"
    part_isolating = False


def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("filename", FileNameConverter)


bp.record_once(_add_converter)

DEFAULT_TYPE = "application/octet-stream"
CACHE_CONTROL = "private, immutable, max-age=31536000"
READ_CHUNK = 64 * 1024
MAX_TYPE_LENGTH = 255


class UserSlots:
    """Transfers in progress per user in this process: uploads (``maxConcurrentUpload``), downloads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, int] = {}

    def acquire(self, user_id: int, limit: int) -> bool:
        with self._lock:
            if self._active.get(user_id, 0) >= limit:
                return False
            self._active[user_id] = self._active.get(user_id, 0) + 1
            return True

    def release(self, user_id: int) -> None:
        with self._lock:
            left = self._active.get(user_id, 0) - 1
            if left > 0:
                self._active[user_id] = left
            else:
                self._active.pop(user_id, None)

    def active(self, user_id: int) -> int:
        """Transfers ``user_id`` has in progress."""
        return self._active.get(user_id, 0)


def upload_slots(app: Any = None) -> UserSlots:
    """The app's upload slot table (created on first use)."""
    app = app or current_app
    return app.extensions.setdefault("jmapmono.upload_slots", UserSlots())


def download_slots(app: Any = None) -> UserSlots:
    """The app's download slot table (created on first use)."""
    app = app or current_app
    return app.extensions.setdefault("jmapmono.download_slots", UserSlots())


#: The problem type of an upload refused because the account is at its storage quota (RFC 9425 leaves uploads
#: to the server; the JMAP error name a client already knows from /set).
OVER_QUOTA = "urn:ietf:params:jmap:error:overQuota"


def problem(status: int, detail: str, type: str = "about:blank", **extra: Any) -> Response:
    """An RFC 7807 problem details response."""
    body = {"type": type, "status": status, "detail": detail, **extra}
    if type == "about:blank":
        body["title"] = _TITLES.get(status, "Error")
    response = jsonify(body)
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


_TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _limit_problem(status: int, limit: str, detail: str) -> Response:
    """``urn:ietf:params:jmap:error:limit`` naming the limit, as for the API's request limits (RFC 8620 §3.6.1)."""
    return problem(status, detail, REQUEST_ERROR_PREFIX + "limit", limit=limit)


def _is_header_safe(value: str) -> bool:
    return all(" " <= c <= "~" or c == "\t" for c in value)


def normalize_media_type(value: str | None) -> str:
    """The upload's Content-Type as given, with the media type lower-cased and outer whitespace trimmed (never
    sniffed); application/octet-stream when absent. Raises ValueError on control or non-ASCII characters."""
    if value is None or not value.strip():
        return DEFAULT_TYPE
    if not _is_header_safe(value) or len(value) > 1024:
        raise ValueError("Content-Type must be printable ASCII")
    head, _, params = value.partition(";")
    head = head.strip().lower()
    params = params.strip()
    return f"{head}; {params}" if params else head


def content_disposition(name: str) -> str:
    """``attachment`` with ``name`` per RFC 6266: an ASCII ``filename=`` everyone understands, plus
    ``filename*=UTF-8''…`` with the exact name when the ASCII form differs. Control characters are replaced,
    so the header cannot be split or injected."""
    name = "".join(c if c.isprintable() else "_" for c in name) or "download"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = "".join("_" if c in '"\\' else c for c in fallback)
    if not fallback.strip(" ."):
        fallback = "download"
    elif fallback.startswith("."):  # only the extension survived: keep it, but not as a hidden file
        fallback = "download" + fallback
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return value


def _body_stream() -> IO[bytes]:
    """The request body: werkzeug's bounded stream, or the server's own stream for a chunked body (gevent's
    pywsgi ends it at the last chunk but does not flag ``wsgi.input_terminated``)."""
    chunked = request.headers.get("Transfer-Encoding", "").split(",")[-1].strip().lower() == "chunked"
    if request.content_length is None and chunked:
        return request.environ["wsgi.input"]
    return request.stream


def _read_body(limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` (never holding more than ``limit + 1`` bytes)."""
    stream = _body_stream()
    buf = bytearray()
    while True:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            return None


@bp.post("/jmap/upload/<account_id>/")
@require_auth
def upload(account_id: str) -> Response:
    """RFC 8620 §6.1: store the body as a blob of ``account_id`` readable by the uploader."""
    started = time.monotonic()
    services = current_services()
    principal = g.principal
    limits = services.config.limits
    access = services.accounts.access(principal.user_id, account_id)
    if access is None:
        return problem(404, f"account {account_id!r} not found")
    if access.is_read_only:
        return problem(403, f"account {account_id!r} is read-only")
    try:
        media_type = normalize_media_type(request.headers.get("Content-Type"))
    except ValueError as e:
        return problem(400, str(e))
    too_large = f"the upload exceeds maxSizeUpload ({limits.max_size_upload} octets)"
    if request.content_length is not None and request.content_length > limits.max_size_upload:
        return _limit_problem(413, "maxSizeUpload", too_large)
    slots = upload_slots()
    if not slots.acquire(principal.user_id, limits.max_concurrent_upload):
        return _limit_problem(
            429, "maxConcurrentUpload", f"at most {limits.max_concurrent_upload} uploads at once per user"
        )
    try:
        try:
            data = _read_body(limits.max_size_upload)
        except (OSError, ValueError) as e:  # client went away or sent a malformed chunked body
            return problem(400, f"the request body could not be read: {type(e).__name__}")
        if data is None:
            return _limit_problem(413, "maxSizeUpload", too_large)
        account, _ = services.mailboxes.get_quota(account_id)
        refused = account.limits.refusal(account.usage, len(data), 0)
        if refused:
            log.info(kv(event="blob_upload_over_quota", user=principal.email, account=account_id, size=len(data)))
            return problem(413, refused, OVER_QUOTA)
        meta = services.blobs.upload(account_id, principal.user_id, data, media_type)
    finally:
        slots.release(principal.user_id)
    log.info(
        kv(
            event="blob_upload",
            user=principal.email,
            account=account_id,
            blob=meta.blob_id,
            size=meta.size,
            type=meta.type,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    response = jsonify({"accountId": account_id, "blobId": meta.blob_id, "type": meta.type, "size": meta.size})
    response.status_code = 201
    return response


@bp.get("/jmap/download/<account_id>/<blob_id>/<filename:name>")
@require_auth
def download(account_id: str, blob_id: str, name: str) -> Response:
    """RFC 8620 §6.2: the blob's bytes as an attachment named ``name``, typed exactly as ``type`` asks."""
    services = current_services()
    principal = g.principal
    wanted_type = request.args.get("type")
    if wanted_type is not None and (not _is_header_safe(wanted_type) or len(wanted_type) > MAX_TYPE_LENGTH):
        return problem(400, "the type parameter must be a printable ASCII media type")
    not_found = problem(404, f"blob {blob_id!r} not found in account {account_id!r}")
    if not is_valid_blob_id(blob_id) or services.accounts.access(principal.user_id, account_id) is None:
        return not_found
    if not sharing.blob_readable(services, principal, account_id, blob_id):
        return not_found
    meta = services.blobs.lookup(account_id, blob_id, principal.user_id)
    if meta is not None and request.if_none_match.contains(blob_id):
        # Immutable content: the client's copy is current; skip reading the bytes.
        response = Response(status=304)
        _cache_headers(response, blob_id)
        return response
    slots = download_slots()
    limit = services.config.max_concurrent_downloads
    if not slots.acquire(principal.user_id, limit):
        response = problem(429, f"at most {limit} downloads at once per user; retry when one has ended")
        response.headers["Retry-After"] = "1"
        return response
    release = _releaser(slots, principal.user_id)
    try:
        blob = services.blobs.open(account_id, blob_id, principal.user_id)
    except BaseException:
        release()
        raise
    if blob is None:
        release()
        return not_found
    span = _requested_span(blob)
    if span is None:
        release()
        response = problem(416, f"the range is outside the blob's {blob.size} octets")
        response.headers["Content-Range"] = f"bytes */{blob.size}"
        return response
    start, end = span
    # werkzeug closes the body when the server is done with it (sent, client gone, or HEAD): slot back then.
    stream = _Stream(blob, start, end, principal.email, release)
    response = Response(stream, status=206 if (start, end) != (0, blob.size) else 200)
    response.headers["Content-Type"] = wanted_type or blob.type or DEFAULT_TYPE
    response.headers["Content-Length"] = str(end - start)
    response.headers["Content-Disposition"] = content_disposition(name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Accept-Ranges"] = "bytes"
    if response.status_code == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    _cache_headers(response, blob_id)
    return response


def _releaser(slots: UserSlots, user_id: int) -> Callable[[], None]:
    """Give the download slot back, once, whichever of the paths that end a response gets there first."""
    held = [True]

    def release() -> None:
        if held:
            held.clear()
            slots.release(user_id)

    return release


def _requested_span(blob: BlobReader) -> tuple[int, int] | None:
    """The octets to send: the whole blob, or one satisfiable range (several, or a malformed header, are
    ignored: the whole body, RFC 9110 §14.2); None when the single range lies outside the blob (416)."""
    whole = (0, blob.size)
    if "Range" not in request.headers or request.range is None or len(request.range.ranges) != 1:
        return whole
    if_range = request.if_range
    if (if_range.etag is not None and if_range.etag != blob.blob_id) or if_range.date is not None:
        return whole  # content addressed: only our own ETag names this representation
    return request.range.range_for_length(blob.size)


class _Stream:
    """The response body of a download: the blob's slices as they are read; closing it ends the download."""

    def __init__(self, blob: BlobReader, start: int, end: int, user: str, release: Callable[[], None]) -> None:
        self.blob = blob
        self.start, self.end = start, end
        self.user = user
        self.release = release
        self.sent = 0
        self.started = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for data in self.blob.chunks(self.start, self.end):
                self.sent += len(data)
                yield data
        except BlobGone:
            log.warning(kv(event="blob_download_cut", user=self.user, blob=self.blob.blob_id, sent=self.sent))
            # The length is promised: the only honest end is to drop the connection (pywsgi does, quietly).
            raise BrokenPipeError(errno.EPIPE, "the blob was deleted while it was being sent") from None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.release()
        log.info(
            kv(
                event="blob_download",
                user=self.user,
                blob=self.blob.blob_id,
                size=self.end - self.start,
                sent=self.sent,
                ms=f"{(time.monotonic() - self.started) * 1000:.1f}",
            )
        )


@bp.errorhandler(StoreError)
def _store_unavailable(e: StoreError) -> Response:
    """A database outage is temporary: 503 with Retry-After, never a 500."""
    log.warning(kv(event="blob_store_unavailable", path=request.path, error=str(e)))
    response = problem(503, "the blob store is temporarily unavailable; try again")
    response.headers["Retry-After"] = "5"
    return response


def _cache_headers(response: Response, blob_id: str) -> None:
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.set_etag(blob_id)
