"""Exit codes (sysexits.h) and the error a command raises to end with one.

They are a contract with the shell and with the MTA that runs ``deliver`` (README, "Operator CLI").
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_TEMPFAIL = 75
EX_CONFIG = 78


class CommandError(Exception):
    """A command failed in an expected way: print ``message`` and exit with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
