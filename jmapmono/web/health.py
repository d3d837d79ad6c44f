"""Probes and metrics for operators: ``/healthz`` (alive), ``/readyz`` (ready to serve), ``/metrics``.

No authentication: the probes say only check names and states. ``/metrics`` answers only clients in
``JMAPMONO_METRICS_ALLOWED_NETWORKS`` (loopback by default) and is a plain 404 to anyone else. The
address checked is the client's, behind the trusted proxies (web/proxy.py), not the connection's peer:
a reverse proxy on the same box makes every Internet client a loopback peer.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import gevent
from flask import Blueprint, Response, abort, current_app, jsonify, request

from jmapmono import metrics
from jmapmono.log import kv
from jmapmono.web.context import WebServices, current_services

log = logging.getLogger("jmapmono.health")

bp = Blueprint("health", __name__)

#: Paths a load balancer or scraper polls every few seconds: their request lines are logged at DEBUG.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Seconds the readiness query may take before the store counts as unreachable.
STORE_TIMEOUT = 2.0
#: Seconds a load balancer should wait before probing a process that is not ready again.
RETRY_AFTER = 5


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    services = current_services()
    checks = readiness(services)
    failed = sorted(name for name, state in checks.items() if state not in ("ok", "off", "unknown"))
    _log_transition(failed)
    response = jsonify(
        {"status": "fail" if failed else "ok", "checks": checks, **({"failed": failed} if failed else {})}
    )
    if failed:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    services = current_services()
    if not client_allowed(request.remote_addr, services.config.metrics_allowed_networks):
        abort(404)
    _sample(services)
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def client_allowed(address: str | None, networks: Any) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def oldest_pending_ms(services: WebServices) -> int | None:
    """``created_at`` of the oldest unpublished outbox row (the pending index's first row); None when none."""
    with gevent.Timeout(STORE_TIMEOUT), services.db.read() as tx:
        value = tx.value(
            "SELECT created_at FROM event_outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT 1",
        )
    return None if value is None else int(value)


def readiness(services: WebServices) -> dict[str, str]:
    """Each check's state: store ok|unreachable, bus ok|disconnected|off (no event flow), relay ok|stuck|unknown."""
    checks: dict[str, str] = {}
    oldest: int | None = None
    try:
        oldest = oldest_pending_ms(services)
        checks["store"] = "ok"
    except (Exception, gevent.Timeout) as e:
        checks["store"] = "unreachable"
        log.debug(kv(event="ready_store_failed", error=f"{type(e).__name__}: {e}"))
    buses = services.buses_ready()
    checks["bus"] = "off" if buses is None else "ok" if buses else "disconnected"
    if checks["store"] != "ok":
        checks["relay"] = "unknown"
    elif oldest is not None and time.time() * 1000 - oldest > services.config.ready_outbox_max_age_seconds * 1000:
        checks["relay"] = "stuck"
    else:
        checks["relay"] = "ok"
    return checks


def _log_transition(failed: list[str]) -> None:
    """One line when readiness changes, not one per probe."""
    state = ",".join(failed) or "ready"
    previous = current_app.config.setdefault("READINESS_LOGGED", "ready")
    if state != previous:
        current_app.config["READINESS_LOGGED"] = state
        if failed:
            log.warning(kv(event="not_ready", failed=state))
        else:
            log.info(kv(event="ready_again", was=previous))


def _sample(services: WebServices) -> None:
    """The database-wide gauges, read at scrape (two indexed counts)."""
    try:
        with gevent.Timeout(STORE_TIMEOUT), services.db.read() as tx:
            pending = tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL")
            oldest = tx.value("SELECT created_at FROM event_outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT 1")
            parked = tx.value("SELECT COUNT(*) FROM event_dead_letters")
    except (Exception, gevent.Timeout) as e:
        log.debug(kv(event="metrics_sample_failed", error=f"{type(e).__name__}: {e}"))
        return
    metrics.OUTBOX_BACKLOG.set(int(pending or 0))
    metrics.OUTBOX_OLDEST_AGE.set(max(0.0, time.time() - int(oldest) / 1000) if oldest is not None else 0)
    metrics.DEAD_LETTERS.set(int(parked or 0))
