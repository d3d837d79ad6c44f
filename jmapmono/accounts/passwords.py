"""Password hashing with Argon2id (argon2-cffi's vetted defaults).

One verification costs ~110 ms of CPU and 64 MiB here. Under gevent a KDF run
on the hub thread freezes every connection of the process for that long, so
:func:`run_kdf` moves it to gevent's thread pool (argon2-cffi releases the GIL:
other greenlets keep running, stalls stay under ~10 ms) and bounds how many
run at once so a burst of logins cannot exhaust memory.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
T = TypeVar("T")

#: At most this many KDF runs at once per process (one per core here).
MAX_CONCURRENT_KDF = 2
_kdf_slots: threading.BoundedSemaphore | None = None  # made on first use, after gevent has patched threading
_dummy_hash: str | None = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True when ``password`` matches ``hashed``; never raises for a mismatch or a bad hash."""
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """True when ``hashed`` was made with other parameters than today's (upgrade it on next login)."""
    try:
        return _hasher.check_needs_rehash(hashed)
    except (InvalidHashError, ValueError):
        return True


def dummy_hash() -> str:
    """A hash of a random secret with today's parameters: verified for unknown users so they cost the same."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(24))
    return _dummy_hash


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("threading")


def run_kdf(fn: Callable[..., T], *args: object) -> T:
    """Run a CPU-heavy hashing call without blocking the other greenlets of the process."""
    global _kdf_slots
    if _kdf_slots is None:
        _kdf_slots = threading.BoundedSemaphore(MAX_CONCURRENT_KDF)
    with _kdf_slots:
        if _gevent_patched():
            import gevent

            return gevent.get_hub().threadpool.apply(fn, args)
        return fn(*args)
