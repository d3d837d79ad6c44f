"""WebSocket costs: memory per idle connection (with and without permessage-deflate) and echo round trip.

    .venv/bin/python bench/websocket_idle_memory.py [--connections 1000] [--echoes 2000]

Each server runs in its own process (so its RSS is its own); this process is the client, holding every
connection open. Servers measured:

- ``jmap``: jmapmono itself (the real app on ``make_http_server``, SQLite, event flow running); each
  client authenticates, enables push for every type (so its PushChannel and bus registrations count)
  and makes one request, then stays idle. With deflate: as negotiated (no context takeover), and with
  context takeover forced (what a default permessage-deflate, e.g. flask-sock's, keeps per connection).
- ``wsproto-echo`` / ``flask-sock-echo``: the bare transports, an echo endpoint each: jmapmono's
  WebSocket class (wsproto + its greenlet scheduling) and flask-sock / simple-websocket.

Prints one line per measurement; the figures are recorded in docs/adr/0003-websocket-library.md.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port, wait_for_port  # noqa: E402
from tests.support.ws_client import WsClient, basic  # noqa: E402

USER, PASSWORD = "bench@example.org", "bench password 1"


# -- servers (run in a child process) -------------------------------------------------------------------------------


def serve_jmap(port: int, takeover: bool) -> None:
    from jmapmono.cli.serve import make_http_server
    from jmapmono.config import load_config
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app

    if takeover:  # what a default permessage-deflate keeps: both zlib contexts, 15-bit windows
        from wsproto.extensions import PerMessageDeflate

        from jmapmono.push import ws_connection

        class Takeover(PerMessageDeflate):  # unbounded too: only idle memory is measured here
            too_large = False

        ws_connection.BoundedDeflate = lambda max_message: Takeover()  # type: ignore[assignment,misc]
    data = tempfile.mkdtemp(prefix="jmapmono-bench-")
    config = load_config(
        {
            "JMAPMONO_DATA_DIR": data,
            "PORT": str(port),
            "JMAPMONO_LMTP_LISTEN": "off",
            "JMAPMONO_LOG_LEVEL": "WARNING",
            "JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER": "100000",  # every connection is the one user's
        }
    )
    services = Runtime(config)
    services.accounts.create_user(USER, PASSWORD)
    services.start()
    server = make_http_server(create_app(services), "127.0.0.1", port)
    server.serve_forever()


def serve_wsproto_echo(port: int) -> None:
    """jmapmono's transport alone: accept, then echo every message."""
    from jmapmono.cli.serve import make_http_server
    from jmapmono.push.ws_connection import TOO_LARGE, WebSocket, accept

    def app(environ, start_response):
        response, connection, inflater = accept(environ, "jmap", True, 10_000_000)
        sock = environ["wsgi.input"].raw._sock
        sock.sendall(response)
        ws = WebSocket(sock, connection, max_message=10_000_000, outbound_limit=1_000_000, inflater=inflater)
        for message in ws.messages():
            if message is not TOO_LARGE:
                ws.send_text(message)
        ws.finish()
        return []

    make_http_server(app, "127.0.0.1", port).serve_forever()


def serve_flask_sock_echo(port: int) -> None:
    from flask import Flask
    from flask_sock import Sock

    from jmapmono.cli.serve import make_http_server

    app = Flask("echo")
    app.config["SOCK_SERVER_OPTIONS"] = {"subprotocols": ["jmap"]}
    sock = Sock(app)

    @sock.route("/jmap/ws")
    def echo(ws):
        while True:
            ws.send(ws.receive())

    make_http_server(app, "127.0.0.1", port).serve_forever()


# -- client side ----------------------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int) -> int:
    """RSS once it stops moving (the server finished handling what the clients sent)."""
    last, same = -1, 0
    while same < 5:
        time.sleep(0.1)
        now = rss_kb(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


def start(kind: str, takeover: bool = False) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve", kind, "--port", str(port)] + (["--takeover"] if takeover else [])
    proc = subprocess.Popen(argv, cwd=ROOT)
    wait_for_port(port, 30, proc)
    return proc, port


def connect(kind: str, port: int, deflate: bool) -> WsClient:
    if kind == "jmap":
        client = WsClient(port, basic(USER, PASSWORD), deflate=deflate, timeout=60)
        client.enable_push(None)  # one message each way: push registered, zlib contexts created if kept
        return client
    client = WsClient(port, deflate=deflate, timeout=60)
    client.send_json({"@type": "Ping"})
    client.recv()
    return client


def idle_memory(kind: str, n: int, deflate: bool, takeover: bool = False) -> float:
    proc, port = start(kind, takeover)
    try:
        for client in [connect(kind, port, deflate) for _ in range(20)]:  # warm up: modules, caches, pools
            client.close()
        gc.collect()
        before = settled_rss(proc.pid)
        clients = [connect(kind, port, deflate) for _ in range(n)]
        negotiated = bool(clients[0].extensions)
        after = settled_rss(proc.pid)
        per = (after - before) / n
        kept = takeover or kind == "flask-sock-echo"  # flask-sock always offers wsproto's defaults
        mode = ("deflate, context takeover" if kept else "deflate, no context takeover") if negotiated else "plain"
        print(f"{kind:16} {mode:34} {n} idle connections: +{(after - before) / 1024:.1f} MB, {per:.1f} KB each")
        for client in clients:
            client.sock.close()
        return per
    finally:
        proc.kill()
        proc.wait()


def echo_round_trip(kind: str, count: int, deflate: bool = False) -> None:
    proc, port = start(kind)
    try:
        client = connect(kind, port, deflate)
        times = []
        for i in range(count):
            started = time.perf_counter()
            if kind == "jmap":
                client.call([["Core/echo", {"i": i}, "e"]], f"r{i}", ["urn:ietf:params:jmap:core"])
            else:
                client.send_json({"i": i})
                client.recv()
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        median, p99 = statistics.median(times), times[int(len(times) * 0.99)]
        what = "Core/echo request" if kind == "jmap" else "echo"
        mode = "deflate" if client.extensions else "plain"
        print(f"{kind:16} {mode:34} {what} round trip: median {median:.3f} ms, p99 {p99:.3f} ms ({count} sequential)")
        client.close()
    finally:
        proc.kill()
        proc.wait()


def large_message(kind: str, size: int = 3_000_000) -> None:
    """A 3 MB text message (non-ASCII, so UTF-8 is really validated) echoed back: wire + validation time."""
    proc, port = start(kind)
    try:
        client = connect(kind, port, False)
        text = "é" * (size // 2)
        started = time.perf_counter()
        client.send_json({"t": text})
        try:
            ok = client.recv(timeout=20)["t"] == text
        except AssertionError:  # simple-websocket writes with socket.send(): a frame larger than the
            ok = False  # socket buffer goes out truncated and the peer waits for the rest forever
        took = f"echoed in {(time.perf_counter() - started) * 1000:.0f} ms" if ok else "NOT echoed within 20 s"
        print(f"{kind:16} {'plain':34} 3 MB text message {took}")
        client.sock.close()
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--takeover", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ours-only", action="store_true", help="only jmapmono's rows, not the libraries compared in ADR 0003"
    )
    args = parser.parse_args()
    if args.serve == "jmap":
        return serve_jmap(args.port, args.takeover)
    if args.serve == "wsproto-echo":
        return serve_wsproto_echo(args.port)
    if args.serve == "flask-sock-echo":
        return serve_flask_sock_echo(args.port)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    n = args.connections
    idle_memory("jmap", n, deflate=False)
    idle_memory("jmap", n, deflate=True)
    idle_memory("jmap", n, deflate=True, takeover=True)
    if args.ours_only:
        echo_round_trip("jmap", args.echoes)
        return None
    for kind in ("wsproto-echo", "flask-sock-echo"):
        idle_memory(kind, n, deflate=False)
        idle_memory(kind, n, deflate=True)
    for kind in ("wsproto-echo", "flask-sock-echo"):
        echo_round_trip(kind, args.echoes)
        echo_round_trip(kind, args.echoes, deflate=True)
    echo_round_trip("jmap", args.echoes)
    for kind in ("wsproto-echo", "flask-sock-echo"):
        large_message(kind)


if __name__ == "__main__":
    main()
