"""Prometheus metrics (``GET /metrics``, jmapmono/web/health.py): one instrument per thing an operator watches.

The instruments live in prometheus_client's process registry, as that library is built: they are
write-only telemetry (no code reads them back to decide anything), each call one ``inc``/``observe``.
Labels are a bounded set (transport, result, reason, bus, JMAP method name): never a user or account.

When several processes serve (gunicorn workers, the LMTP child) ``PROMETHEUS_MULTIPROC_DIR`` names a
directory they all write into and :func:`exposition` sums them (jmapmono/metrics_dir.py prepares it);
it must be set before this module is first imported. Without it each process counts for itself.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.registry import REGISTRY

#: Seconds: from a few milliseconds (push on one box) to the slow tail worth an alert.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WEBSOCKETS_OPEN = Gauge("jmapmono_websockets_open", "Open JMAP WebSockets", multiprocess_mode="livesum")
EVENTSOURCE_OPEN = Gauge("jmapmono_eventsource_streams_open", "Open EventSource streams", multiprocess_mode="livesum")
PUSHES_SENT = Counter("jmapmono_pushes_sent", "StateChange frames written to clients", ["transport"])
PUSH_LATENCY = Histogram(
    "jmapmono_push_latency_seconds",
    "From the mutation to its StateChange frame written (oldest change in the frame)",
    ["transport"],
    buckets=_LATENCY_BUCKETS,
)
DELIVERIES = Counter("jmapmono_deliveries", "LMTP deliveries per recipient by result", ["result"])
DELIVERY_DURATION = Histogram(
    "jmapmono_delivery_duration_seconds",
    "From the LMTP message received to the delivery committed (one recipient)",
    buckets=_LATENCY_BUCKETS,
)
API_METHOD_DURATION = Histogram(
    "jmapmono_api_method_duration_seconds",
    "JMAP method calls by method name (unknown: not a registered method) and their duration",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
RELAY_LAG = Histogram(
    "jmapmono_relay_lag_seconds",
    "From the outbox row written to its event published on the bus",
    buckets=_LATENCY_BUCKETS,
)
OUTBOX_BACKLOG = Gauge(
    "jmapmono_outbox_pending_rows", "Outbox rows not yet published (sampled at scrape)", multiprocess_mode="mostrecent"
)
OUTBOX_OLDEST_AGE = Gauge(
    "jmapmono_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row, 0 when none (sampled at scrape)",
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS = Gauge(
    "jmapmono_dead_letters",
    "Parked events awaiting redelivery or pruning (sampled at scrape)",
    multiprocess_mode="mostrecent",
)
DEAD_LETTERED = Counter("jmapmono_dead_lettered", "Events parked as dead letters after their last retry", ["bus"])
BUS_KEY_LISTENERS = Gauge(
    "jmapmono_bus_key_listeners",
    "Registered key listeners (push connections' accounts)",
    ["bus"],
    multiprocess_mode="livesum",
)
BUS_GROUP_LISTENERS = Gauge(
    "jmapmono_bus_group_listeners", "Registered group listeners", ["bus"], multiprocess_mode="livesum"
)
LOGINS_THROTTLED = Counter("jmapmono_logins_throttled", "Logins refused or delayed by throttling", ["reason"])


def since_ms(at_ms: object, transport: str) -> None:
    """Count one push on ``transport``; observe its latency when the oldest change's time (ms) is known."""
    PUSHES_SENT.labels(transport).inc()
    if isinstance(at_ms, int) and at_ms > 0:
        PUSH_LATENCY.labels(transport).observe(max(0.0, time.time() - at_ms / 1000))


def delivery(reply: str, seconds: float) -> None:
    """One LMTP recipient's outcome from its reply code: 2xx stored, 5xx refused, 4xx temporary."""
    result = "stored" if reply[:1] == "2" else "refused" if reply[:1] == "5" else "temporary"
    DELIVERIES.labels(result).inc()
    if result == "stored":
        DELIVERY_DURATION.observe(seconds)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """The text exposition (body, content type): every process's files summed in multiprocess mode."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST
