"""permessage-deflate (RFC 7692) for the server side that never inflates past the message size limit.

wsproto's ``PerMessageDeflate`` inflates each frame whole before anyone can count it: one 65 KB frame
of zeros is 64 MB once inflated. :class:`BoundedDeflate` inflates each piece with ``max_length`` set to
what the message may still grow by, plus one byte to see it go over. A message that goes over is
marked :attr:`~BoundedDeflate.too_large`: its zlib state is dropped and the rest of it is passed over
without being inflated, so a socket holds at most about one limit of inflated text.

An over-size compressed message is treated as an over-size plain one (ws_connection.py): the reader
answers a RequestError ``limit`` (``maxSizeRequest``) as soon as it goes over and the connection stays
open, rather than a 1009 close. The limit is a JMAP limit, advertised in the Session, that a client can
obey and recover from on the same socket (RFC 8620 §3.6.1); whether the client compressed the message
changes nothing to that. Passing the rest over is safe because the client's context is reset for each
message: ``client_no_context_takeover`` is always in our answer, and RFC 7692 §7.1.1.2 binds the client.

Inflated pieces end on a UTF-8 character boundary (an incomplete last character is held back for the
next piece), so what the reader got of a message that goes over is still valid text when it ends.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

#: Appended to a compressed message before inflating it (RFC 7692 §7.2.2; the sender strips it, §7.2.1).
_TAIL = b"\x00\x00\xff\xff"


def incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 character that is not complete yet (0-3)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the first byte of the last character
            length = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return back if length > back else 0
    return 0  # four continuation bytes: not UTF-8; the decoder says so


class BoundedDeflate(PerMessageDeflate):
    """Server-side permessage-deflate, no context takeover either way, inflating at most ``max_message``
    (+1) bytes of one message."""

    def __init__(self, max_message: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self.max_message = max_message
        #: The message being read went over ``max_message`` (reset when the next one starts).
        self.too_large = False
        #: The most inflated bytes one message has reached on this connection (at most ``max_message`` + 1).
        self.largest_inflated = 0
        self._inflated = 0
        self._held = b""

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if self._inbound_compressed is None and not opcode.iscontrol():  # the first frame of a message
            self._inflated, self._held, self.too_large = 0, b"", False
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        if self.too_large:
            return b""  # the rest of an over-size message: passed over, never inflated
        return self._inflate(bytes(data), last=False)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return super().frame_inbound_complete(proto, fin)  # nothing inflated here
        self._inbound_compressed = None
        if self.too_large:
            return None
        out = self._inflate(_TAIL, last=True)
        self._decompressor = None  # no context takeover: the next message starts afresh
        return out

    def _inflate(self, data: bytes, last: bool) -> bytes | CloseReason:
        """Inflate ``data`` up to one byte past the limit; the text to hand on (b"" once over)."""
        if self._decompressor is None:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA  # compressed data outside a compressed message
        try:
            out = self._decompressor.decompress(data, self.max_message + 1 - self._inflated)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        self.largest_inflated = max(self.largest_inflated, self._inflated)
        if self._inflated > self.max_message:
            self.too_large = True
            self._decompressor = None  # with its unconsumed input: nothing of this message is kept
            self._held = b""
            return b""
        out = self._held + out
        keep = 0 if last else incomplete_tail(out)
        self._held = out[len(out) - keep :] if keep else b""
        return out[: len(out) - keep] if keep else out
