"""Row ids (jmapmono/ids.py) sort, as strings, in the order they were made: within one millisecond, and
when the clock steps back. Lists ordered by a creation time then id rely on it (tests of each list: in
the folder of its layer, e.g. tests/jmap/test_submission.py)."""

from __future__ import annotations

import re

import pytest

from jmapmono.accounts import app_passwords
from jmapmono.ids import OrderedIds
from jmapmono.mailbox.model import new_id
from jmapmono.push import subscriptions_store
from tests.support.clock import one_millisecond


def test_ids_made_in_one_millisecond_sort_in_the_order_they_were_made(monkeypatch):
    with one_millisecond(monkeypatch):
        made = [new_id("M") for _ in range(1000)]
    assert sorted(made) == made and len(set(made)) == 1000
    assert all(re.fullmatch(r"M[0-9a-v]{18}", i) for i in made)  # the format ids always had


def test_ids_keep_their_order_when_the_clock_steps_back(monkeypatch):
    with one_millisecond(monkeypatch, at=1_700_000_001.0):
        first = new_id("M")
    with one_millisecond(monkeypatch, at=1_700_000_000.0):  # a second earlier, by the wall clock
        second = new_id("M")
    assert first < second


def test_later_milliseconds_sort_later_whatever_the_tail(monkeypatch):
    ids = OrderedIds("0123456789abcdef", 16, 12)
    made = []
    for ms in range(5):
        with one_millisecond(monkeypatch, at=1_700_000_000 + ms / 1000):
            made += [ids() for _ in range(3)]
    assert sorted(made) == made


def test_app_password_and_push_subscription_ids_sort_too(monkeypatch):
    with one_millisecond(monkeypatch):
        passwords = [app_passwords._new_id() for _ in range(200)]
        subscriptions = [subscriptions_store.new_id() for _ in range(200)]
    assert sorted(passwords) == passwords and sorted(subscriptions) == subscriptions
    assert all(app_passwords.parse_token(f"jmm_{p}_{'A' * 43}") for p in passwords)  # still valid in tokens
    assert all(re.fullmatch(r"S[0-9a-f]{32}", s) for s in subscriptions)


def test_an_alphabet_out_of_ascii_order_is_refused():
    with pytest.raises(ValueError):
        OrderedIds("abcdefghijklmnopqrstuvwxyz234567", 12, 9)  # base32's usual order: digits after letters
