"""The Sieve language as jmapmono runs it: the grammar (RFC 5228 §8), the tests (§5) and the actions (§4)
with imap4flags (RFC 5232), reject/ereject (RFC 5429), vacation (RFC 5230), mailbox (RFC 5490) and copy
(RFC 3894); and delivery through the MailboxManager with a script parsed once, when set."""

from __future__ import annotations

import pytest

from jmapmono.mailbox.sieve import compile as sieve_compile
from jmapmono.mailbox.sieve import scripts as sieve_scripts
from jmapmono.mailbox.sieve.compile import compile_script
from jmapmono.mailbox.sieve.parse import SieveSyntaxError
from jmapmono.mailbox.sieve.run import Message, SieveRuntimeError, load
from tests.support.sieve import activate

RAW = (
    b"Return-Path: <carol@remote.example>\r\n"
    b"From: Carol <Carol@Remote.Example>\r\n"
    b'To: alice@example.org, "Bob" <bob@example.org>\r\n'
    b"Subject: =?utf-8?q?R=C3=A9union_JMAP?= weekly\r\n"
    b"X-Spam: no\r\n"
    b"\r\n"
    b"Body.\r\n"
)
REQUIRE = 'require ["fileinto", "envelope", "imap4flags", "reject", "vacation", "copy", "mailbox"];\n'


def run(script: str, raw: bytes = RAW, rcpt: str = "alice@example.org", max_redirects: int = 4):
    return load(compile_script(REQUIRE + script, 1000)).run(Message(raw, rcpt), max_redirects)


def filed(script: str, **kwargs) -> list[str | None]:
    return sorted((t.mailbox or "INBOX") for t in run(script, **kwargs).targets)


def error(script: str) -> SieveSyntaxError:
    with pytest.raises(SieveSyntaxError) as caught:
        compile_script(script, 1000)
    return caught.value


@pytest.mark.parametrize(
    "test, expected",
    [
        ('header :contains "subject" "réunion"', True),  # RFC 5228 §2.7.2: encoded words decoded
        ('header :is "subject" "Réunion JMAP weekly"', True),
        ('header :matches "subject" "*JMAP w?ekly"', True),
        ('header :matches "subject" "JMAP*"', False),
        ('header :comparator "i;octet" :contains "subject" "jmap"', False),  # §2.7.3: i;octet is exact
        ('header :contains "x-missing" ""', False),
        ('address :is "from" "carol@remote.example"', True),  # i;ascii-casemap by default
        ('address :localpart :is "to" "bob"', True),
        ('address :domain :matches "from" "*.example"', True),
        ('address :all :contains ["to", "cc"] "nobody"', False),
        ('envelope :is "from" "carol@remote.example"', True),  # RFC 5228 §5.4: MAIL FROM (Return-Path)
        ('envelope :localpart :is "to" "alice"', True),  # RCPT TO
        ('exists ["From", "X-Spam"]', True),
        ('exists ["From", "X-Other"]', False),
        ("size :over 100", True),
        ("size :under 1K", True),
        ('allof (true, header :contains "subject" "jmap")', True),
        ("anyof (false, false)", False),
        ("not false", True),
    ],
)
def test_tests(test: str, expected: bool):
    """RFC 5228 §5 (address, allof, anyof, envelope, exists, false, header, not, size, true) with the match
    types :is, :contains, :matches (§2.7.1) and the comparators i;ascii-casemap and i;octet (§2.7.3)."""
    assert filed(f'if {test} {{ fileinto "Yes"; }}') == (["Yes"] if expected else ["INBOX"])


def test_control_and_actions():
    """RFC 5228 §3 (if/elsif/else, stop) and §4: fileinto and redirect cancel the implicit keep, keep does
    not add a second copy, discard stores nothing; :copy keeps it (RFC 3894)."""
    assert filed('if false { keep; } elsif true { fileinto "A"; } else { fileinto "B"; }') == ["A"]
    assert filed('fileinto "A"; stop; fileinto "B";') == ["A"]
    assert filed('keep; fileinto "A";') == ["A", "INBOX"]
    assert filed("discard;") == []
    outcome = run('redirect :copy "x@example.net"; redirect :copy "X@example.net";')
    assert outcome.redirects == ["x@example.net"] and [t.mailbox for t in outcome.targets] == [None]
    assert run('redirect :copy "x@example.net"; redirect "y@example.net";').targets == []


def test_flags():
    """RFC 5232 §3, §5: setflag/addflag/removeflag change the flags the implicit keep and fileinto use;
    :flags overrides them; system flags become JMAP keywords (RFC 8621 §4.1.1)."""
    outcome = run('setflag "\\\\Seen $a"; addflag ["$b", "\\\\Flagged"]; removeflag "$A"; fileinto :flags "$x" "X";')
    by_box = {t.mailbox: sorted(t.keywords) for t in outcome.targets}
    assert by_box == {"X": ["$x"]}
    outcome = run('addflag ["\\\\Answered", "$b"];')
    assert sorted(outcome.targets[0].keywords) == ["$answered", "$b"]


def test_run_time_errors():
    """RFC 5228 §2.10.6 with §4.2 (a site limit on redirects) and RFC 5429 §2.1 (reject is incompatible
    with keep, fileinto and redirect): errors at run time, which delivery turns into a keep in the Inbox."""
    with pytest.raises(SieveRuntimeError):
        run('redirect "a@x.example"; redirect "b@x.example";', max_redirects=1)
    with pytest.raises(SieveRuntimeError):
        run('fileinto "A"; reject "no";')
    assert run('reject "go away";').reject == "go away"
    vacation = run('vacation :days 2 :subject "Away" :addresses ["me@x.example"] "Back soon";').vacation
    assert vacation == {"reason": "Back soon", "days": 2, "subject": "Away", "addresses": ["me@x.example"]}


def test_grammar_and_meaning_errors_name_the_line():
    """RFC 5228 §8 grammar; §3.2 require; unknown commands, tests, tags and extensions are errors when the
    script is set, each naming its line."""
    assert error("keep;\nif true {\n  keep\n}\n").line == 4  # missing ';'
    assert error('keep;\n\nfileinto "x";').message == 'fileinto needs require "fileinto"'
    assert error('require "fileinto";\nfileinto :bogus "x";').line == 2
    assert "unsupported extension" in str(error('require "notify";'))
    assert "require must come before" in str(error('keep;\nrequire "fileinto";'))
    assert "elsif without a preceding if" in str(error("keep;\nelsif true { keep; }"))
    assert "unknown test" in str(error("if frobs { keep; }"))
    assert "unterminated string" in str(error('keep;\nreject "abc'))
    assert "more than 3 commands and tests" in str(compile_error("keep; keep; keep; keep;", 3))


def compile_error(script: str, max_nodes: int) -> SieveSyntaxError:
    with pytest.raises(SieveSyntaxError) as caught:
        compile_script(script, max_nodes)
    return caught.value


def test_strings_multiline_and_comments():
    """RFC 5228 §2.3 comments, §2.4.2 strings: escapes, ``text:`` with dot-stuffing, K/M/G quantifiers."""
    script = (
        'require "reject"; # a comment\n/* block\ncomment */\n'
        'if size :over 1K { reject text:\nline one\n..two "quoted" \\n\n.\n; }\n'
        'reject "a \\"quoted\\" \\\\ reason";\n'
    )
    commands = compile_script(script, 100)["commands"]
    assert commands[0][1][0][0] == ["size", "over", 1024]
    assert commands[0][1][0][1] == [["reject", 'line one\n.two "quoted" \\n\n', False]]
    assert commands[1] == ["reject", 'a "quoted" \\ reason', False]


def test_delivery_never_parses_the_script(services, monkeypatch):
    """Delivery runs the compiled form kept when the script was set: neither the parser nor the compiler
    runs per message."""
    user, _ = services.accounts.create_user("alice@example.org")
    script = 'require "fileinto";\nif header :contains "subject" "jmap" { fileinto "Archive"; }\n'
    activate(services, "alice@example.org", script)

    def refuse(*args, **kwargs):
        raise AssertionError("parsed at delivery")

    monkeypatch.setattr(sieve_compile, "parse", refuse)
    monkeypatch.setattr(sieve_scripts, "compile_script", refuse)
    for _ in range(2):
        services.mailboxes.deliver("alice@example.org", RAW)
    with services.db.read() as tx:
        names = tx.query(
            "SELECT b.name FROM message_mailboxes mm JOIN mailboxes b ON b.id = mm.mailbox_id "
            "JOIN messages m ON m.id = mm.message_id WHERE m.account_id = ?",
            (user.account_id,),
        )
    assert [r["name"] for r in names] == ["Archive", "Archive"]
