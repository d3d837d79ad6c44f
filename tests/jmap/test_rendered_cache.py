"""The rendered-email cache: only immutable properties kept, bounded by its estimated memory, least recently
used out first."""

from __future__ import annotations

from jmapmono.jmap.rendered_cache import RenderedEmails, footprint


def email(n: int, size: int = 100) -> dict:
    return {"id": f"M{n:02}", "subject": "x" * size, "keywords": {"$seen": True}, "mailboxIds": {"B1": True}}


def test_only_the_immutable_properties_are_kept():
    cache = RenderedEmails(1 << 20)
    kept = cache.keep(("M1", "G1", "T1", "asked"), email(1))
    assert kept == {"id": "M01", "subject": "x" * 100}
    assert cache.get(("M1", "G1", "T1", "asked")) == kept and cache.get(("M1", "G1", "T1", "other")) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_memory_stays_under_the_bound_and_the_least_recently_used_goes_first():
    one = footprint({"id": "M00", "subject": "x" * 100})
    cache = RenderedEmails(one * 10)
    for n in range(10):
        cache.keep(n, email(n))
    assert len(cache) == 10 and cache.held_bytes == one * 10
    assert cache.get(0) is not None  # now the most recently used
    cache.keep(10, email(10))
    assert cache.held_bytes <= cache.max_bytes and len(cache) == 10
    assert cache.get(1) is None and cache.get(0) is not None and cache.get(10) is not None


def test_an_email_too_big_for_its_share_is_not_kept_and_no_memory_keeps_nothing():
    small = footprint({"id": "M00", "subject": "x" * 100})
    cache = RenderedEmails(small * 8)
    cache.keep("small", email(0))
    assert cache.keep("big", email(1, size=small * 2))["subject"] and cache.get("big") is None
    assert cache.get("small") is not None
    nothing = RenderedEmails(0)
    assert nothing.keep("k", email(2)) == {"id": "M02", "subject": "x" * 100} and nothing.get("k") is None
    assert len(nothing) == 0
