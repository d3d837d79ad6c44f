"""The parsed-message cache: bounded by its estimated memory, least recently used out first."""

from __future__ import annotations

from jmapmono.mailbox.mime_tree import parse_mime
from jmapmono.mailbox.parsed_cache import ParsedMessages, footprint


def raw(n: int, size: int = 1000) -> bytes:
    return f"Subject: {n:03}\r\n\r\n".encode() + b"x" * size + b"\r\n"


def test_a_parse_is_kept_and_found_by_its_blob_id():
    cache = ParsedMessages(1 << 20)
    message = cache.parse("G1", raw(1))
    assert cache.get("G1") is message and cache.get("G2") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_memory_stays_under_the_bound_and_the_least_recently_used_goes_first():
    one = footprint(parse_mime(raw(0)))
    cache = ParsedMessages(one * 10)
    for n in range(10):
        cache.parse(f"G{n}", raw(n))
    assert len(cache) == 10 and cache.held_bytes == one * 10
    assert cache.get("G0") is not None  # now the most recently used
    cache.parse("G10", raw(10))
    assert cache.held_bytes <= cache.max_bytes and len(cache) == 10
    assert cache.get("G1") is None and cache.get("G0") is not None and cache.get("G10") is not None


def test_a_message_too_big_for_its_share_is_parsed_but_not_kept():
    small = footprint(parse_mime(raw(0)))
    cache = ParsedMessages(small * 8)
    cache.parse("Gsmall", raw(0))
    big = cache.parse("Gbig", raw(1, size=small * 2))
    assert big.raw.startswith(b"Subject: 001") and cache.get("Gbig") is None and cache.get("Gsmall") is not None


def test_no_memory_keeps_nothing():
    cache = ParsedMessages(0)
    cache.parse("G1", raw(1))
    assert len(cache) == 0 and cache.held_bytes == 0
