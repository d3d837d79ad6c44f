"""Thread assignment: replies join when the base subject matches, unrelated same-subject mail does not,
References chains, out-of-order arrival; Thread changes and emailIds order, on both backends."""

import pytest

from jmapmono.mailbox import threads


def mail(subject: str, msgid: str | None = None, in_reply_to: str | None = None, refs: str | None = None) -> bytes:
    head = f"From: bob@example.org\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: <{msgid}>\r\n"
    if in_reply_to:
        head += f"In-Reply-To: <{in_reply_to}>\r\n"
    if refs:
        head += "References: " + " ".join(f"<{r}>" for r in refs.split()) + "\r\n"
    return (head + "\r\nbody\r\n").encode()


@pytest.fixture
def deliver(services):
    services.accounts.create_user("alice@example.org")

    def _deliver(*args, **kwargs) -> str:
        return services.mailboxes.deliver("alice@example.org", mail(*args, **kwargs)).thread_id

    return _deliver


def test_a_reply_joins_its_parents_thread(deliver):
    parent = deliver("Hello", "a@x")
    assert deliver("Re: Hello", "b@x", in_reply_to="a@x") == parent
    assert deliver("RE: [list] Fwd: hello", "c@x", refs="a@x") == parent  # base subject matches


def test_same_subject_without_references_starts_a_new_thread(deliver):
    assert deliver("Hello", "a@x") != deliver("Hello", "b@x")
    assert deliver("Hello") != deliver("Hello")  # no Message-ID at all


def test_a_reference_with_another_subject_starts_a_new_thread(deliver):
    assert deliver("Hello", "a@x") != deliver("Something else", "b@x", in_reply_to="a@x")


def test_references_chain_and_out_of_order_arrival(deliver):
    reply = deliver("Re: Plan", "r1@x", in_reply_to="p@x", refs="p@x")  # the parent is not here yet
    sibling = deliver("Re: Plan", "r2@x", in_reply_to="p@x", refs="p@x")  # another reply to it
    parent = deliver("Plan", "p@x")  # arrives last
    deep = deliver("Re: Re: Plan", "r3@x", in_reply_to="r2@x", refs="p@x r2@x")
    assert reply == sibling == parent == deep


def test_keys_are_cleaned_deduplicated_and_bounded():
    refs = [f"r{i}@x" for i in range(80)]
    keys = threads.keys_for(["<a@x>"], [" a@x "], refs, "Hello")
    assert keys.ids[0] == "a@x" and keys.ids.count("a@x") == 1
    assert len(keys.ids) == 1 + threads.MAX_REFERENCES and keys.ids[-1] == "r79@x"
    assert threads.subject_key("Hello  World") == threads.subject_key("hello world")


def test_thread_changes_and_email_order(services, deliver):
    user = services.accounts.get("alice@example.org")
    mgr, acc = services.mailboxes, user.account_id
    t = deliver("Topic", "t1@x")
    state = mgr.states(acc)["Thread"]
    assert deliver("Re: Topic", "t2@x", in_reply_to="t1@x") == t
    changed = services.changes.changes_since(acc, "Thread", state)
    assert changed.updated == [t] and changed.created == []
    emails, _ = mgr.get_threads(acc, [t])
    assert len(emails[t]) == 2
    first, second = emails[t]
    found, _ = mgr.get_messages(acc, emails[t])
    assert found[first].received_at <= found[second].received_at and found[first].message_id == ["t1@x"]
    state = mgr.states(acc)["Thread"]
    mgr.destroy_messages(acc, [first])
    assert services.changes.changes_since(acc, "Thread", state).updated == [t]
    state = mgr.states(acc)["Thread"]
    mgr.destroy_messages(acc, [second])
    assert services.changes.changes_since(acc, "Thread", state).destroyed == [t]
    assert mgr.get_threads(acc, [t])[0] == {}
    # the destroyed thread's keys are gone: a late reply starts a new thread, never the old id
    assert deliver("Re: Topic", "t3@x", in_reply_to="t1@x") != t
