"""``--env-file`` / ``JMAPMONO_ENV_FILE``: settings from a file, for processes that do not get them otherwise.

One file (e.g. ``/etc/jmapmono/env``) configures every way jmapmono runs on a box: the server (systemd's
``EnvironmentFile=`` reads the same format), the ``deliver`` pipe that Postfix starts with an almost
empty environment, and the operator's ``jmapmono user …``. The format is systemd's: ``KEY=VALUE`` per
line, ``#`` or ``;`` comments, blank lines, a value optionally in single or double quotes. A variable
already in the environment wins over the file, so one command can still override a setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from jmapmono.config import ConfigError

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse_env_file(path: Path) -> dict[str, str]:
    """The variables set in ``path``; ConfigError naming the file (and line) when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"env file {path}: {getattr(e, 'strerror', None) or e}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConfigError(f"env file {path}, line {number}: expected KEY=VALUE")
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_env_file(path: Path, environ: MutableMapping[str, str] | None = None) -> None:
    """Set the variables of ``path`` that ``environ`` (default: the process's) does not have yet."""
    environ = os.environ if environ is None else environ
    for key, value in parse_env_file(path).items():
        environ.setdefault(key, value)
