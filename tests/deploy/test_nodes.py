"""Several nodes, each a separate ``serve`` process, on one Postgres and one RabbitMQ, as a cluster runs them:
mail taken over LMTP by one node is pushed to sockets on another; a node joins while clients are connected and
mail flows; a node leaves (SIGTERM) and its clients resume on another node by pushState with nothing missed."""

from __future__ import annotations

import signal

import gevent

from tests.support.cluster import connect, email_state


def test_mail_taken_by_one_node_is_pushed_to_every_socket_on_another(cluster):
    a, b = cluster.node(lmtp=True), cluster.node()
    clients = [connect(b) for _ in range(3)]
    cluster.deliver(a)
    states = {email_state(client.push(timeout=30, where=email_state)) for client in clients}
    assert len(states) == 1 and None not in states


def test_a_node_joins_and_one_leaves_while_mail_flows_and_its_clients_resume_elsewhere(cluster):
    a, b = cluster.node(lmtp=True), cluster.node()
    on_b = [connect(b) for _ in range(2)]
    cluster.deliver(a)
    for client in on_b:
        client.push(timeout=30, where=email_state)

    flowing = gevent.spawn(lambda: [cluster.deliver(a) for _ in range(3)])
    c = cluster.node()  # joins while the clients of b stay connected and mail flows
    flowing.get(timeout=60)
    on_c = connect(c)
    cluster.deliver(a)
    latest = email_state(on_c.push(timeout=30, where=email_state))
    # b's clients were pushed through it all, up to the latest state.
    last = [client.push(timeout=30, where=lambda m: email_state(m) == latest) for client in on_b]

    b.proc.send_signal(signal.SIGTERM)  # b leaves: its sockets are closed as "going away"
    assert [client.wait_closed(timeout=30) for client in on_b] == [1001, 1001]
    assert b.proc.wait(timeout=30) == 0
    cluster.deliver(a)  # while b's clients are away
    missed = email_state(on_c.push(timeout=30, where=email_state))
    assert missed != latest

    # They come back on c, from the pushState they last saw: the change made while away is pushed at once.
    resumed = [connect(c, push_state=m["pushState"]) for m in last]
    assert [email_state(client.push(timeout=30, where=email_state)) for client in resumed] == [missed, missed]
    cluster.deliver(a)
    after = email_state(on_c.push(timeout=30, where=email_state))
    assert [email_state(client.push(timeout=30, where=email_state)) for client in resumed] == [after, after]
