"""Checking a parsed script's meaning and turning it into the compiled form kept in the store.

The compiled form is plain JSON (lists, strings, numbers, booleans), made once when a script is set: what
:mod:`jmapmono.mailbox.sieve.run` loads and executes. Everything a delivery would otherwise check (that an
extension was required, that arguments fit their command, the comparator, the match type) is checked here.

Supported (``require``): fileinto, reject, ereject, envelope, imap4flags, vacation, mailbox (``:create``),
copy, and the comparators i;octet and i;ascii-casemap (RFC 5228 §2.7.3: always available).
"""

from __future__ import annotations

from typing import Any

from jmapmono.mailbox.sieve.parse import Arg, Node, SieveSyntaxError, parse

#: The extensions a script may require (also the capability's ``sieveExtensions``).
EXTENSIONS = (
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "imap4flags",
    "vacation",
    "mailbox",
    "copy",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
)
COMPARATORS = ("i;ascii-casemap", "i;octet")
MATCH_TYPES = (":is", ":contains", ":matches")
ADDRESS_PARTS = (":all", ":localpart", ":domain")
#: The compiled form's version: a stored form of another version is compiled again from the script.
FORM = 1

_NEEDS = {
    "fileinto": "fileinto",
    "reject": "reject",
    "ereject": "ereject",
    "envelope": "envelope",
    "vacation": "vacation",
    "setflag": "imap4flags",
    "addflag": "imap4flags",
    "removeflag": "imap4flags",
}


def _fail(message: str, line: int) -> SieveSyntaxError:
    return SieveSyntaxError(message, line)


class _Compiler:
    def __init__(self, max_nodes: int) -> None:
        self.required: set[str] = set()
        self.nodes = 0
        self.max_nodes = max_nodes

    def count(self, node: Node) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise _fail(f"the script has more than {self.max_nodes} commands and tests", node.line)

    def need(self, extension: str, node: Node, what: str) -> None:
        if extension not in self.required:
            raise _fail(f'{what} needs require "{extension}"', node.line)

    # -- arguments -------------------------------------------------------------------------------------------

    def split(self, node: Node, tags: dict[str, int], positional: int) -> tuple[dict[str, Any], list[Arg]]:
        """The tagged arguments (tag → its value, or True) and the positional ones of ``node``."""
        tagged: dict[str, Any] = {}
        args = list(node.args)
        rest: list[Arg] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg.kind == "tag":
                if rest:
                    raise _fail(f"{arg.value} must come before the other arguments of {node.name}", arg.line)
                name = str(arg.value)
                if name not in tags:
                    raise _fail(f"{node.name} has no argument {name}", arg.line)
                takes = tags[name]
                group = self._group(name)
                if group in tagged:
                    raise _fail(f"{node.name}: {name} conflicts with an earlier argument", arg.line)
                if takes:
                    if i + 1 >= len(args) or args[i + 1].kind == "tag":
                        raise _fail(f"{name} needs a value", arg.line)
                    tagged[group] = (name, args[i + 1])
                    i += 2
                    continue
                tagged[group] = (name, True)
            else:
                rest.append(arg)
            i += 1
        if len(rest) != positional:
            raise _fail(f"{node.name} takes {positional} argument(s) after its tags, not {len(rest)}", node.line)
        return tagged, rest

    @staticmethod
    def _group(tag: str) -> str:
        if tag in MATCH_TYPES:
            return "match"
        if tag in ADDRESS_PARTS:
            return "part"
        return tag

    @staticmethod
    def strings(arg: Arg, what: str) -> list[str]:
        if arg.kind != "strings":
            raise _fail(f"{what} must be a string or a string list", arg.line)
        return list(arg.value)  # type: ignore[arg-type]

    def string(self, arg: Arg, what: str) -> str:
        values = self.strings(arg, what)
        if len(values) != 1 or not arg.single:
            raise _fail(f"{what} must be a single string", arg.line)
        return values[0]

    def number(self, arg: Arg, what: str) -> int:
        if arg.kind != "number":
            raise _fail(f"{what} must be a number", arg.line)
        return int(arg.value)  # type: ignore[arg-type]

    def match(self, node: Node, tagged: dict[str, Any]) -> tuple[str, str]:
        match = tagged.get("match", (":is", True))[0][1:]
        comparator = "i;ascii-casemap"
        if ":comparator" in tagged:
            comparator = self.string(tagged[":comparator"][1], ":comparator")
            if comparator not in COMPARATORS:
                raise _fail(f"unsupported comparator {comparator!r}", node.line)
        return match, comparator

    def flags(self, tagged: dict[str, Any]) -> list[str] | None:
        if ":flags" not in tagged:
            return None
        return self.strings(tagged[":flags"][1], ":flags")

    # -- tests -----------------------------------------------------------------------------------------------

    def test(self, node: Node) -> list[Any]:
        self.count(node)
        name = node.name
        if name in ("true", "false"):
            self.split(node, {}, 0)
            self.no_tests(node, 0)
            return [name]
        if name == "not":
            self.split(node, {}, 0)
            self.no_tests(node, 1)
            return ["not", self.test(node.tests[0])]
        if name in ("allof", "anyof"):
            self.split(node, {}, 0)
            if not node.tests:
                raise _fail(f"{name} needs a test list", node.line)
            return [name, [self.test(t) for t in node.tests]]
        self.no_tests(node, 0)
        if name == "exists":
            _, rest = self.split(node, {}, 1)
            return ["exists", [h.lower() for h in self.strings(rest[0], "the header names")]]
        if name == "size":
            tagged, rest = self.split(node, {":over": 0, ":under": 0}, 1)
            which = [t for t in (":over", ":under") if t in tagged]
            if len(which) != 1:
                raise _fail("size needs exactly one of :over and :under", node.line)
            return ["size", which[0][1:], self.number(rest[0], "the size limit")]
        if name == "header":
            tagged, rest = self.split(node, {**dict.fromkeys(MATCH_TYPES, 0), ":comparator": 1}, 2)
            match, comparator = self.match(node, tagged)
            names = [h.lower() for h in self.strings(rest[0], "the header names")]
            return ["header", match, comparator, names, self.strings(rest[1], "the key list")]
        if name in ("address", "envelope"):
            if name == "envelope":
                self.need("envelope", node, "the envelope test")
            tagged, rest = self.split(node, {**dict.fromkeys(MATCH_TYPES + ADDRESS_PARTS, 0), ":comparator": 1}, 2)
            match, comparator = self.match(node, tagged)
            part = tagged.get("part", (":all", True))[0][1:]
            names = [h.lower() for h in self.strings(rest[0], "the header names")]
            if name == "envelope":
                bad = [n for n in names if n not in ("from", "to")]
                if bad:
                    raise _fail(f'envelope parts are "from" and "to", not {bad[0]!r}', node.line)
            return [name, part, match, comparator, names, self.strings(rest[1], "the key list")]
        raise _fail(f"unknown test {name!r}", node.line)

    @staticmethod
    def no_tests(node: Node, wanted: int) -> None:
        if len(node.tests) != wanted:
            raise _fail(f"{node.name} takes {wanted or 'no'} test(s)", node.line)

    # -- commands --------------------------------------------------------------------------------------------

    def block(self, nodes: list[Node], top: bool = False) -> list[list[Any]]:
        out: list[list[Any]] = []
        previous = ""
        started = False
        for node in nodes:
            self.count(node)
            name = node.name
            if name == "require":
                if not top or started:
                    raise _fail("require must come before any other command", node.line)
                self.require(node)
                previous = name
                continue
            started = True
            if name in ("elsif", "else"):
                if previous not in ("if", "elsif"):
                    raise _fail(f"{name} without a preceding if", node.line)
                self.branch(node, out[-1])
            else:
                if node.block is not None and name != "if":
                    raise _fail(f"{name} takes no block", node.line)
                out.append(self.command(node))
            previous = name
        return out

    def require(self, node: Node) -> None:
        _, rest = self.split(node, {}, 1)
        self.no_tests(node, 0)
        for extension in self.strings(rest[0], "the extension list"):
            if extension not in EXTENSIONS:
                raise _fail(f"unsupported extension {extension!r}", node.line)
            self.required.add(extension)

    def branch(self, node: Node, if_command: list[Any]) -> None:
        if if_command[2] is not None:
            raise _fail(f"{node.name} after else", node.line)
        if node.block is None:
            raise _fail(f"{node.name} needs a block", node.line)
        if node.name == "else":
            self.split(node, {}, 0)
            self.no_tests(node, 0)
            if_command[2] = self.block(node.block)
        else:
            self.split(node, {}, 0)
            self.no_tests(node, 1)
            if_command[1].append([self.test(node.tests[0]), self.block(node.block)])

    def command(self, node: Node) -> list[Any]:
        name = node.name
        if name in _NEEDS:
            self.need(_NEEDS[name], node, name)
        if name == "if":
            self.split(node, {}, 0)
            self.no_tests(node, 1)
            if node.block is None:
                raise _fail("if needs a block", node.line)
            return ["if", [[self.test(node.tests[0]), self.block(node.block)]], None]
        self.no_tests(node, 0)
        if name in ("stop", "discard"):
            self.split(node, {}, 0)
            return [name]
        if name == "keep":
            tagged, _ = self.split(node, {":flags": 1}, 0)
            if ":flags" in tagged:
                self.need("imap4flags", node, "keep :flags")
            return ["keep", self.flags(tagged)]
        if name == "fileinto":
            tagged, rest = self.split(node, {":flags": 1, ":create": 0, ":copy": 0}, 1)
            for tag, extension in ((":flags", "imap4flags"), (":create", "mailbox"), (":copy", "copy")):
                if tag in tagged:
                    self.need(extension, node, f"fileinto {tag}")
            mailbox = self.string(rest[0], "the mailbox name")
            if not mailbox.strip():
                raise _fail("the mailbox name is empty", node.line)
            return ["fileinto", mailbox, self.flags(tagged), ":create" in tagged, ":copy" in tagged]
        if name == "redirect":
            tagged, rest = self.split(node, {":copy": 0}, 1)
            if ":copy" in tagged:
                self.need("copy", node, "redirect :copy")
            return ["redirect", self.string(rest[0], "the address"), ":copy" in tagged]
        if name in ("reject", "ereject"):
            _, rest = self.split(node, {}, 1)
            return ["reject", self.string(rest[0], "the reason"), name == "ereject"]
        if name in ("setflag", "addflag", "removeflag"):
            _, rest = self.split(node, {}, 1)
            return ["flags", name, self.strings(rest[0], "the flag list")]
        if name == "vacation":
            return self.vacation(node)
        raise _fail(f"unknown command {name!r}", node.line)

    def vacation(self, node: Node) -> list[Any]:
        tags = {":days": 1, ":subject": 1, ":from": 1, ":addresses": 1, ":handle": 1}
        tagged, rest = self.split(node, tags, 1)
        params: dict[str, Any] = {"reason": self.string(rest[0], "the vacation reason")}
        if ":days" in tagged:
            params["days"] = self.number(tagged[":days"][1], ":days")
        for tag in (":subject", ":from", ":handle"):
            if tag in tagged:
                params[tag[1:]] = self.string(tagged[tag][1], tag)
        if ":addresses" in tagged:
            params["addresses"] = self.strings(tagged[":addresses"][1], ":addresses")
        return ["vacation", params]


def compile_script(text: str, max_nodes: int) -> dict[str, Any]:
    """The compiled form of ``text``; SieveSyntaxError (with its line) when it is not valid or too large."""
    compiler = _Compiler(max_nodes)
    commands = compiler.block(parse(text), top=True)
    return {"form": FORM, "commands": commands, "nodes": compiler.nodes}
