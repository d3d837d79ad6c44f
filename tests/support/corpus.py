"""A deterministic corpus of tricky messages (raw bytes) for the MIME parsers and delivery tests.

``corpus()`` returns (name, raw) pairs: hand-written cases for each kind of real-world breakage,
then seeded random structures. Every message is something an MTA may hand us; none may make the
parsers raise, and each named case has specific assertions in the tests.
"""

from __future__ import annotations

import base64
import quopri
import random

CRLF = b"\r\n"


def _msg(headers: list[str | bytes], body: bytes = b"", eol: bytes = CRLF) -> bytes:
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    return eol.join(lines) + eol + eol + body


def _mp(boundary: str, parts: list[bytes], close: bool = True, preamble: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"--" + boundary.encode() + CRLF + part + CRLF
    if close:
        out += b"--" + boundary.encode() + b"--" + CRLF
    return out


def _part(ctype: str, body: bytes, *extra: str) -> bytes:
    return _msg([f"Content-Type: {ctype}", *extra], body)


STD = [
    "From: Alice Example <alice@example.com>",
    "To: Bob <bob@example.org>",
    "Date: Tue, 15 Oct 2024 09:30:00 +0200",
    "Message-ID: <std@example.com>",
    "MIME-Version: 1.0",
]


def rfc8621_example() -> bytes:
    """The structure of RFC 8621 §4.1.4's example; each leaf's body is its letter."""
    inline = "Content-Disposition: inline"
    inner = _mp(
        "inner",
        [_part("text/plain", b"B", inline), _part("image/jpeg", b"C", inline), _part("text/plain", b"D", inline)],
    )
    related = _mp("rel", [_part("text/html", b"<p>E</p>"), _part("image/jpeg", b"F", "Content-ID: <f@example.com>")])
    alternative = _mp(
        "alt",
        [_part("multipart/mixed; boundary=inner", inner), _part("multipart/related; boundary=rel", related)],
    )
    attached = _msg(["Subject: J", "From: j@example.com"], b"J body")
    mid = _mp(
        "mid",
        [
            _part("multipart/alternative; boundary=alt", alternative),
            _part("image/jpeg", b"G", "Content-Disposition: attachment"),
            _part("application/x-excel", b"H"),
            _part("message/rfc822", attached),
        ],
    )
    outer = _mp(
        "outer",
        [
            _part("text/plain", b"A", inline),
            _part("multipart/mixed; boundary=mid", mid),
            _part("text/plain", b"K", inline),
        ],
    )
    return _msg([*STD, "Subject: RFC 8621 example", "Content-Type: multipart/mixed; boundary=outer"], outer)


def nested_related() -> bytes:
    """multipart/alternative inside multipart/mixed inside multipart/related, with a cid image."""
    alternative = _mp(
        "alt",
        [
            _part("text/plain; charset=utf-8", "Plain caf\u00e9".encode()),
            _part("text/html; charset=utf-8", '<p>Html caf\u00e9 <img src="cid:logo@x"></p>'.encode()),
        ],
    )
    mixed = _mp("mix", [_part("multipart/alternative; boundary=alt", alternative)])
    logo = base64.encodebytes(b"\x89PNG\r\n\x1a\nfake").replace(b"\n", CRLF)
    related = _mp(
        "rel",
        [
            _part("multipart/mixed; boundary=mix", mixed),
            _part("image/png", logo, "Content-Transfer-Encoding: base64", "Content-ID: <logo@x>"),
        ],
    )
    return _msg([*STD, "Subject: nested", 'Content-Type: multipart/related; boundary="rel"'], related)


def encoded_words() -> bytes:
    return _msg(
        [
            "From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <jorg@example.de>",
            'To: "=?iso-8859-1?Q?Andr=E9?=" <andre@example.fr>, =?x-unknown?Q?Caf=E9?= <cafe@example.com>',
            "Cc: =?utf-8?q?a?= =?utf-8?q?b?= <ab@example.com>",
            "Date: Tue, 15 Oct 2024 09:30:00 +0200",
            "Message-ID: <words@example.com>",
            "Subject: =?UTF-8?B?8J+YgCBzbWlsZQ==?= =?ISO-8859-1?Q?_caf=E9?=\r\n =?utf-8?q?_na=C3=AFve?= plain"
            " not=?utf-8?q?decoded?=",
            "X-Bad-Charset: =?x-unknown?q?Caf=E9?= end",
            "X-Split-Char: =?utf-8?b?4pyT?= =?utf-8?b?8J+Y?= =?utf-8?b?gA==?=",
        ],
        b"hello\r\n",
    )


def bad_charsets() -> bytes:
    parts = [
        _part("text/plain; charset=x-unknown", b"unknown charset caf\xe9\r\n"),
        _part("text/plain; charset=utf-8", b"broken utf-8 \xff\xfe here\r\n"),
        _part("text/plain; charset=iso-8859-1", b"latin caf\xe9 \x80uro\r\n"),
        _part("text/plain; charset=utf-16", "sixteen".encode("utf-16")),
        _part('text/plain; charset="base64"', b"not a charset\r\n"),
    ]
    return _msg([*STD, "Subject: charsets", "Content-Type: multipart/mixed; boundary=cs"], _mp("cs", parts))


def eight_bit_utf8() -> bytes:
    return _msg(
        [
            "From: J\u00f6rg M\u00fcller <jorg@example.de>".encode(),
            "To: bob@example.org",
            "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2713".encode(),
            "Date: Tue, 15 Oct 2024 09:30:00 +0200",
            "Message-ID: <utf8@example.com>",
        ],
        "R\u00e9sum\u00e9 attached\r\n".encode(),
    )


def eight_bit_latin1() -> bytes:
    return _msg(
        [
            b"From: Andr\xe9 <andre@example.fr>",
            b"To: bob@example.org",
            b"Subject: Caf\xe9 cr\xe8me",
            b"Date: Tue, 15 Oct 2024 09:30:00 +0200",
            b"Message-ID: <latin1@example.com>",
        ],
        b"Body with 8-bit \xe9 and no charset\r\n",
    )


def missing_headers() -> bytes:
    return _msg(["To: bob@example.org", "Subject: no date, no id, no from"], b"body\r\n")


def rfc822_attachment() -> bytes:
    inner_body = _mp("in", [_part("text/plain", b"inner text"), _part("text/html", b"<b>inner</b>")])
    inner = _msg(
        ["From: carol@example.com", "Subject: the original", "Content-Type: multipart/alternative; boundary=in"],
        inner_body,
    )
    outer = _mp(
        "out",
        [
            _part("text/plain", b"See the forwarded message."),
            _part("message/rfc822", inner, "Content-Disposition: attachment"),
        ],
    )
    return _msg([*STD, "Subject: Fwd: the original", "Content-Type: multipart/mixed; boundary=out"], outer)


def huge_references(n: int = 20000) -> bytes:
    """About 500 KB of References, folded one id per line."""
    refs = "\r\n ".join(f"<{i}.ref@example.com>" for i in range(n))
    return _msg(
        [*STD, "Subject: Re: long thread", "In-Reply-To: <19999.ref@example.com>", "References: " + refs],
        b"reply\r\n",
    )


def huge_header_line() -> bytes:
    return _msg([*STD, "Subject: long line", "X-Long: " + "x" * 200_000], b"body\r\n")


def lf_endings() -> bytes:
    body = _mp("lf", [_part("text/plain", b"first"), _part("text/html", b"<i>second</i>")]).replace(CRLF, b"\n")
    return _msg([*STD, "Subject: LF only", "Content-Type: multipart/alternative; boundary=lf"], body, eol=b"\n")


def transfer_encodings() -> bytes:
    text = "Gr\u00fc\u00dfe, \u65e5\u672c\u8a9e and a long line " + "z" * 100
    b64 = base64.encodebytes(text.encode("utf-8")).replace(b"\n", CRLF)
    qp = quopri.encodestring(("<p>" + text + "</p>").encode("utf-8")).replace(b"\n", CRLF)
    parts = [
        _part("text/plain; charset=utf-8", b64, "Content-Transfer-Encoding: base64"),
        _part("text/html; charset=utf-8", qp, "Content-Transfer-Encoding: quoted-printable"),
    ]
    return _msg([*STD, "Subject: encodings", "Content-Type: multipart/alternative; boundary=te"], _mp("te", parts))


def lone_dot() -> bytes:
    return _msg([*STD, "Subject: dots"], b"line one\r\n.\r\n..two dots\r\n.\r\nend\r\n")


def nul_bytes() -> bytes:
    return _msg([*STD, b"Subject: nul\x00 inside", b"X-Nul: a\x00b"], b"body \x00 with nul\r\n")


def unterminated_multipart() -> bytes:
    parts = [_part("text/plain", b"first part"), _part("application/pdf", b"%PDF-1.4 truncated")]
    return _msg(
        [*STD, "Subject: unterminated", "Content-Type: multipart/mixed; boundary=open"],
        _mp("open", parts, close=False),
    )


def no_body() -> bytes:
    return CRLF.join(s.encode() for s in [*STD, "Subject: headers only"])


def empty_body() -> bytes:
    return _msg([*STD, "Subject: empty body"])


def multipart_without_boundary() -> bytes:
    return _msg([*STD, "Subject: no boundary", "Content-Type: multipart/mixed"], b"--x\r\n\r\ntext\r\n--x--\r\n")


def boundary_not_found() -> bytes:
    return _msg(
        [*STD, "Subject: boundary missing", "Content-Type: multipart/mixed; boundary=nowhere"], b"just text\r\n"
    )


def bad_base64() -> bytes:
    parts = [
        _part("text/plain", b"see attachment"),
        _part("application/octet-stream", b"SGVsbG8*gd29y!bGQ\r\n=garbage", "Content-Transfer-Encoding: base64"),
        _part("text/plain", b"begin 644 x\r\n", "Content-Transfer-Encoding: x-uuencode"),
    ]
    return _msg([*STD, "Subject: bad base64", "Content-Type: multipart/mixed; boundary=bb"], _mp("bb", parts))


def digest() -> bytes:
    parts = [_msg(["Subject: one"], b"first"), _msg(["Subject: two"], b"second")]
    parts = [CRLF + p for p in parts]  # digest parts: no part headers, default type message/rfc822
    return _msg([*STD, "Subject: digest", "Content-Type: multipart/digest; boundary=dg"], _mp("dg", parts))


def attachment_names() -> bytes:
    parts = [
        _part("text/plain", b"names"),
        _part("application/pdf", b"pdf", "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf"),
        _part('application/msword; name="=?utf-8?B?csOpc3Vtw6kuZG9j?="', b"doc", "Content-Disposition: attachment"),
        _part(
            "application/zip",
            b"zip",
            "Content-Disposition: attachment;\r\n filename*0*=UTF-8''long%20;\r\n filename*1=\"name.zip\"",
        ),
        _part(
            "text/plain; charset=utf-8",
            b"notes",
            'Content-Disposition: attachment; filename="notes.txt"',
            "Content-Language: en, de",
            "Content-Location: http://example.com/\r\n notes.txt",
        ),
    ]
    return _msg([*STD, "Subject: names", "Content-Type: multipart/mixed; boundary=nm"], _mp("nm", parts))


def html_only() -> bytes:
    html = (
        b"<html><head><style>p{color:red}</style><title>T</title></head>"
        b"<body><p>Hello&nbsp;<b>World</b></p></body></html>"
    )
    related = _mp("r", [_part("text/html; charset=utf-8", html), _part("image/gif", b"GIF89a", "Content-ID: <i@x>")])
    return _msg([*STD, "Subject: html only", "Content-Type: multipart/related; boundary=r"], related)


def addresses() -> bytes:
    return _msg(
        [
            'From: "  James Smythe" <james@example.com>',
            "To: Friends: jane@example.com, =?UTF-8?Q?John_Sm=C3=AEth?=\r\n <john@example.com>;, solo@example.com",
            "Cc: bob@example.org (Bob Builder), <@route.example:route@example.org>, Undisclosed recipients:;",
            "Bcc: not-an-address",
            'Reply-To: "Quote \\"d\\"" <q@example.com>',
            "Date: Thu, 13 Feb 1969 23:32:54 -0330",
            "Message-ID:\r\n <addr@example.com>",
            "Subject: addresses",
            "List-Post: <mailto:list@example.com> (posting), <https://example.com/post>",
            "List-Unsubscribe: NO",
        ],
        b"body\r\n",
    )


def deep_nesting(depth: int = 60) -> bytes:
    body = _part("text/plain", b"deep")
    for level in range(depth):
        body = _part(f"multipart/mixed; boundary=d{level}", _mp(f"d{level}", [body]))
    return _msg([*STD, "Subject: deep"], b"").rstrip(CRLF) + CRLF + body


def mbox_from_line() -> bytes:
    return b"From alice@example.com Tue Oct 15 09:30:00 2024\r\n" + _msg([*STD, "Subject: mbox"], b"body\r\n")


def garbage(rng: random.Random, size: int = 4096) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


_LEAF_TYPES = ["text/plain", "text/html", "image/png", "application/pdf", "message/rfc822", "text/calendar"]
_CHARSETS = ["utf-8", "iso-8859-1", "x-unknown", "us-ascii", "windows-1252", "koi8-r", "utf-16"]


def _random_part(rng: random.Random, depth: int) -> bytes:
    if depth < 4 and rng.random() < 0.35:
        subtype = rng.choice(["mixed", "alternative", "related", "digest", "weird"])
        boundary = f"b{depth}x{rng.randrange(10**6)}"
        kids = [_random_part(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return _part(f'multipart/{subtype}; boundary="{boundary}"', _mp(boundary, kids, close=rng.random() > 0.1))
    ctype = rng.choice(_LEAF_TYPES)
    text = "".join(rng.choice("abc \u00e9\u00fc\u65e5\r\n.=?") for _ in range(rng.randint(0, 200)))
    charset = rng.choice(_CHARSETS)
    try:
        data = text.encode("utf-16" if charset == "utf-16" else "utf-8")
    except UnicodeEncodeError:  # pragma: no cover
        data = b""
    headers = [f"Content-Type: {ctype}; charset={charset}"]
    cte = rng.choice(["7bit", "8bit", "base64", "quoted-printable", "x-unknown"])
    headers.append(f"Content-Transfer-Encoding: {cte}")
    if cte == "base64":
        data = base64.encodebytes(data)
    elif cte == "quoted-printable":
        data = quopri.encodestring(data)
    if rng.random() < 0.3:
        headers.append(rng.choice(["Content-Disposition: attachment; filename=a.bin", "Content-Disposition: inline"]))
    if rng.random() < 0.2:
        headers.append(f"Content-ID: <c{rng.randrange(100)}@x>")
    if ctype == "message/rfc822":
        data = _msg(["Subject: inner"], data)
    return _msg(headers, data)


def random_message(rng: random.Random) -> bytes:
    eol = CRLF if rng.random() < 0.8 else b"\n"
    raw = _msg([*STD, f"Subject: random {rng.randrange(10**6)}"], b"").rstrip(CRLF) + CRLF + _random_part(rng, 0)
    return raw.replace(CRLF, eol) if eol != CRLF else raw


CASES = {
    "rfc8621_example": rfc8621_example,
    "nested_related": nested_related,
    "encoded_words": encoded_words,
    "bad_charsets": bad_charsets,
    "eight_bit_utf8": eight_bit_utf8,
    "eight_bit_latin1": eight_bit_latin1,
    "missing_headers": missing_headers,
    "rfc822_attachment": rfc822_attachment,
    "huge_references": huge_references,
    "huge_header_line": huge_header_line,
    "lf_endings": lf_endings,
    "transfer_encodings": transfer_encodings,
    "lone_dot": lone_dot,
    "nul_bytes": nul_bytes,
    "unterminated_multipart": unterminated_multipart,
    "no_body": no_body,
    "empty_body": empty_body,
    "multipart_without_boundary": multipart_without_boundary,
    "boundary_not_found": boundary_not_found,
    "bad_base64": bad_base64,
    "digest": digest,
    "attachment_names": attachment_names,
    "html_only": html_only,
    "addresses": addresses,
    "deep_nesting": deep_nesting,
    "mbox_from_line": mbox_from_line,
}


def message(name: str) -> bytes:
    """One named case of the corpus."""
    return CASES[name]()


def corpus(seed: int = 8621, randoms: int = 40) -> list[tuple[str, bytes]]:
    """Every named case, two garbage blobs and ``randoms`` random structures; same seed, same bytes."""
    rng = random.Random(seed)
    out = [(name, build()) for name, build in CASES.items()]
    out += [(f"garbage_{i}", garbage(rng)) for i in range(2)]
    out.append(("empty_message", b""))
    out += [(f"random_{i}", random_message(rng)) for i in range(randoms)]
    return out
