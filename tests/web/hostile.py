"""The hostile corpus (tests/web/fixtures/hostile/*.eml): HTML mail that tries to run script, load
remote resources, submit forms or navigate. ``{{TRAP}}`` stands for a URL the test listens on."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "fixtures" / "hostile"
TRAP = "{{TRAP}}"


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.eml"))


def load(path: Path, trap: str, to: str = "alice@example.org") -> bytes:
    """The message with its trap URL and recipient filled in, CRLF line ends."""
    text = path.read_text().replace(TRAP, trap).replace("alice@example.org", to)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def subject(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("Subject: "):
            return line[len("Subject: ") :].strip()
    raise AssertionError(f"{path} has no Subject")
