"""The Sieve grammar (RFC 5228 §8): script text to a tree of commands, with the line of each.

Strict: every command ends with ``;`` or a block, strings are unescaped (``\\"`` and ``\\\\``; RFC 5228 §2.4.2),
``text:`` multi-line strings are dot-unstuffed, numbers take the K/M/G quantifiers. The meaning of the
commands is checked by :mod:`jmapmono.mailbox.sieve.compile`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Deepest nesting of blocks and tests accepted (a script is bounded input).
MAX_DEPTH = 32


class SieveSyntaxError(Exception):
    """The script is not valid Sieve; ``line`` is where (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.message = message
        self.line = line


@dataclass
class Arg:
    """One argument: a tag (``:is``), a number, or a string list (``single`` when written as one string)."""

    kind: str  # "tag" | "number" | "strings"
    value: str | int | list[str]
    line: int
    single: bool = False


@dataclass
class Node:
    """A command or a test: its identifier, arguments, tests and (commands only) block."""

    name: str
    line: int
    args: list[Arg] = field(default_factory=list)
    tests: list[Node] = field(default_factory=list)
    block: list[Node] | None = None


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*.*?\*/)
  | (?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n(?:.*?\r?\n)??\.\r?\n)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>[0-9]+[KMGkmg]?)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>[\[\](){},;])
    """,
    re.X | re.S,
)
_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.S)


def _text(raw: str) -> str:
    body = raw.split("\n", 1)[1]
    body = body[: body.rfind(".")]  # the terminating "." line
    lines = body.split("\n")
    return "\n".join(line[1:] if line.startswith("..") else line for line in lines)


def tokenize(script: str) -> list[tuple[str, object, int]]:
    """The tokens of ``script`` as (kind, value, line)."""
    tokens: list[tuple[str, object, int]] = []
    pos, line = 0, 1
    while pos < len(script):
        m = _TOKEN.match(script, pos)
        if m is None:
            if script.startswith("/*", pos):
                raise SieveSyntaxError("unterminated comment", line)
            if script.startswith('"', pos):
                raise SieveSyntaxError("unterminated string", line)
            if script.startswith("text:", pos):
                raise SieveSyntaxError('unterminated text: string (a line with a single "." ends it)', line)
            raise SieveSyntaxError(f"unexpected character {script[pos]!r}", line)
        kind, raw = m.lastgroup or "", m.group()
        if kind == "string":
            tokens.append(("string", _unquote(raw), line))
        elif kind == "text":
            tokens.append(("string", _text(raw), line))
        elif kind == "number":
            n = int(raw.rstrip("KMGkmg")) * _QUANTIFIERS.get(raw[-1].lower(), 1)
            tokens.append(("number", n, line))
        elif kind in ("tag", "ident", "special"):
            tokens.append((kind, raw if kind != "ident" else raw.lower(), line))
        line += raw.count("\n")
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, object, int]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, object, int]:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos]
        last = self.tokens[-1][2] if self.tokens else 1
        return ("eof", None, last)

    def take(self) -> tuple[str, object, int]:
        token = self.peek()
        self.pos += 1
        return token

    def expect(self, value: str, what: str) -> None:
        kind, got, line = self.take()
        if kind != "special" or got != value:
            found = "the end of the script" if kind == "eof" else repr(got)
            raise SieveSyntaxError(f"expected {what}, found {found}", line)

    def commands(self, depth: int, in_block: bool) -> list[Node]:
        out: list[Node] = []
        while True:
            kind, value, line = self.peek()
            if kind == "eof":
                if in_block:
                    raise SieveSyntaxError("missing '}' at the end of the script", line)
                return out
            if kind == "special" and value == "}" and in_block:
                return out
            if kind != "ident":
                raise SieveSyntaxError(f"expected a command, found {value!r}", line)
            out.append(self.command(depth))

    def command(self, depth: int) -> Node:
        _, name, line = self.take()
        node = Node(str(name), line)
        self.arguments(node, depth)
        kind, value, at = self.peek()
        if kind == "special" and value == "{":
            if depth >= MAX_DEPTH:
                raise SieveSyntaxError(f"blocks nested deeper than {MAX_DEPTH}", at)
            self.take()
            node.block = self.commands(depth + 1, True)
            self.expect("}", "'}'")
        else:
            self.expect(";", f"';' after the {name} command")
        return node

    def arguments(self, node: Node, depth: int) -> None:
        while True:
            kind, value, line = self.peek()
            if kind == "tag":
                self.take()
                node.args.append(Arg("tag", str(value).lower(), line))
            elif kind == "number":
                self.take()
                node.args.append(Arg("number", int(value), line))  # type: ignore[call-overload]
            elif kind == "string":
                self.take()
                node.args.append(Arg("strings", [str(value)], line, single=True))
            elif kind == "special" and value == "[":
                self.take()
                node.args.append(Arg("strings", self.string_list(), line))
            else:
                break
        kind, value, line = self.peek()
        if kind == "ident":
            node.tests.append(self.test(depth + 1))
        elif kind == "special" and value == "(":
            self.take()
            node.tests.append(self.test(depth + 1))
            while self.peek()[:2] == ("special", ","):
                self.take()
                node.tests.append(self.test(depth + 1))
            self.expect(")", "')' or ',' in the test list")

    def string_list(self) -> list[str]:
        out = []
        while True:
            kind, value, line = self.take()
            if kind != "string":
                raise SieveSyntaxError("expected a string in the string list", line)
            out.append(str(value))
            kind, value, line = self.take()
            if kind == "special" and value == "]":
                return out
            if kind != "special" or value != ",":
                raise SieveSyntaxError("expected ',' or ']' in the string list", line)

    def test(self, depth: int) -> Node:
        kind, name, line = self.take()
        if kind != "ident":
            raise SieveSyntaxError(f"expected a test, found {name!r}", line)
        if depth >= MAX_DEPTH:
            raise SieveSyntaxError(f"tests nested deeper than {MAX_DEPTH}", line)
        node = Node(str(name), line)
        self.arguments(node, depth)
        return node


def parse(script: str) -> list[Node]:
    """The commands of ``script``; SieveSyntaxError with the line of the first error."""
    parser = _Parser(tokenize(script))
    return parser.commands(0, False)
