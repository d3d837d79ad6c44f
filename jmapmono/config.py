"""Configuration from the environment, twelve-factor style.

Every setting has a documented default (see README.md, "Configuration"), so the
embedded single-box server runs with no configuration at all. Invalid values
raise :class:`ConfigError` with a one-line message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value is invalid; the message is one line for the operator."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class Limits:
    """The eight `urn:ietf:params:jmap:core` limits advertised in the Session."""

    max_size_upload: int = 50_000_000
    max_concurrent_upload: int = 4
    max_size_request: int = 10_000_000
    max_concurrent_requests: int = 4
    max_calls_in_request: int = 16
    max_objects_in_get: int = 500
    max_objects_in_set: int = 500
    collation_algorithms: tuple[str, ...] = ("i;ascii-numeric", "i;ascii-casemap", "i;unicode-casemap")


@dataclass(frozen=True)
class Config:
    """Resolved configuration. Build it with :func:`load_config`."""

    data_dir: Path = Path("data")
    database_url: str = ""
    broker_url: str = "memory://localhost/"
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = ""
    lmtp_listen: str | None = "127.0.0.1:8024"
    max_message_size: int = 50_000_000
    log_level: str = "INFO"
    auth_cache_seconds: int = 60
    #: Failed logins (jmapmono/accounts/throttle.py): this many in a minute from one address (IPv4, IPv6 /64)
    #: and it gets 429 until the oldest is a minute old; this many in 15 minutes for one user and that
    #: user's attempts from addresses not known-good for them are delayed (never refused).
    login_failures_per_minute: int = 10
    #: Reverse proxies in front of jmapmono: the client address is the entry of X-Forwarded-For this many
    #: from the right (the rightmost ones are written by the trusted proxies); 0: the header is ignored.
    trusted_proxies: int = 0
    upload_ttl_seconds: int = 3600
    changes_retention_days: int = 30
    #: Parked events (dead letters) older than this are pruned.
    dead_letter_retention_days: int = 30
    #: Every housekeeping job runs this often (seconds) instead of at its own interval; 0: their own.
    housekeeping_seconds: int = 0
    #: SMTP relay (smarthost) for mail to other servers, ``HOST:PORT``; None: only local recipients.
    smtp_relay: str | None = None
    smtp_relay_user: str = ""
    smtp_relay_password: str = field(default="", repr=False)
    smtp_relay_starttls: bool = False
    #: CA certificates (PEM file) the relay's STARTTLS certificate must chain to; None: the system's.
    smtp_relay_ca_file: Path | None = None
    #: Client networks the LMTP server accepts connections from (anyone else gets 554 and is logged).
    lmtp_allowed_networks: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    #: A vacation response answers each sender at most once per this many days (RFC 3834 §2).
    vacation_reply_days: int = 7
    #: WebSocket (RFC 8887, jmapmono/push/websocket.py): a ping every this many seconds (0: none), and
    #: a peer silent for ping + timeout seconds is closed (its push listeners go with it).
    ws_ping_seconds: float = 30
    ws_ping_timeout_seconds: float = 20
    #: Origins (``https://app.example.org``) whose pages may open the WebSocket, besides the server's
    #: own; ``*`` allows any. Ticket upgrades must come from one of them.
    ws_allowed_origins: tuple[str, ...] = ()
    #: Bytes of responses one socket may have waiting to be written before its requests wait.
    ws_outbound_bytes: int = 1_000_000
    #: Lifetime of a ``POST /jmap/ws/ticket`` ticket (single use).
    ws_ticket_seconds: int = 60
    #: Negotiate permessage-deflate (RFC 7692) when the client offers it.
    ws_deflate: bool = True
    #: EventSource (RFC 8620 §7.3, jmapmono/push/eventsource.py): a client's ping interval is clamped into
    #: [min, max] seconds (the RFC requires min <= 30 and max >= 300; 0 still means no pings).
    eventsource_min_ping: int = 10
    eventsource_max_ping: int = 300
    #: A stream whose write has been blocked this many seconds (a client that stopped reading) is cut.
    eventsource_write_timeout_seconds: float = 60
    #: Web push (RFC 8620 §7.2, jmapmono/push/webpush.py): also push to private, loopback and link-local
    #: addresses, and over plain http:// (tests, labs); off, such subscription URLs are refused.
    push_allow_private_targets: bool = False
    #: The TTL header of every push (seconds a push service may keep an undelivered message).
    push_ttl_seconds: int = 86400
    #: Deadline of one push POST (resolve, connect, TLS, write, answer), seconds.
    push_timeout_seconds: int = 10
    #: Web push VAPID (RFC 8292) contact for push services, ``mailto:`` or ``https:``; empty: the public base
    #: URL when it is https, else ``mailto:postmaster@`` its host (see :attr:`vapid_contact`).
    vapid_subject: str = ""
    #: Push connections (WebSockets and EventSource streams together) one user may hold open in one
    #: process; past it, new ones are refused with 429 (jmapmono/push/slots.py).
    max_push_connections_per_user: int = 100
    #: HTTP front (jmapmono/web/http_front.py): seconds a request head may take to arrive, which also bounds
    #: how long a keep-alive connection may stay idle between requests.
    http_idle_timeout: int = 60
    #: Blob downloads one user may have in progress at once in this process (429 with Retry-After beyond).
    max_concurrent_downloads: int = 8
    #: ``serve``: HTTP and push worker processes sharing one listening socket (1: one process, as before).
    workers: int = 1
    #: GET /metrics answers clients (the address behind trusted proxies) in these networks; others get 404.
    metrics_allowed_networks: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    #: GET /readyz fails ("relay": "stuck") when the oldest unpublished outbox row is older than this (seconds).
    ready_outbox_max_age_seconds: int = 60
    #: RabbitMQ (jmapmono/events/rabbitmq.py): the heartbeat interval, seconds. A broker silent for about two
    #: intervals is presumed gone (the consumer reconnects); a publish or bind it leaves unanswered for one
    #: interval fails, so a hung broker never holds a process.
    broker_heartbeat_seconds: int = 10
    #: A node's key queue is deleted by the broker this many seconds after it was last used (a dead node's).
    broker_node_queue_expires_seconds: int = 60
    #: The longest a database call waits for a connection (a free one in the pool, or a new one), seconds.
    db_connect_timeout_seconds: int = 5
    #: Memory for parsed messages kept between requests (MiB; 0: parse on every read). Per process.
    parsed_cache_mb: int = 32
    #: Memory for Email objects rendered by Email/get, kept between requests (MiB; 0: render on every read).
    rendered_cache_mb: int = 16
    #: The web inbox (jmapmono/web/inbox.py) at ``/``; off: ``/`` is a 404 as any unknown path.
    web_inbox: bool = True
    #: Largest HTML body part ``GET /jmap/html/…`` cleans for display (octets); larger ones get 413.
    max_html_part_bytes: int = 2_000_000
    #: Default quotas of an account without its own (``jmapmono user quota``): octets of stored mail and
    #: number of messages; None: unlimited.
    quota_storage: int | None = None
    quota_messages: int | None = None
    #: Search stemming (jmapmono/mailbox/search_tokens.py): None detects each body's language (the detector's
    #: model is loaded once per indexing process, ~95 MB); a tuple of codes of :data:`STEMMERS` stems every
    #: body in those languages, without detection; () stems nothing.
    search_languages: tuple[str, ...] | None = None
    #: Sieve filters (RFC 9661, jmapmono/mailbox/sieve/): the largest script (octets), scripts per account,
    #: commands and tests in one script, and redirects one delivery may make (each also ends a loop: a
    #: message already redirected by its recipient is kept, not redirected again).
    sieve_max_script_size: int = 65_536
    sieve_max_scripts: int = 16
    sieve_max_rules: int = 2_000
    sieve_max_redirects: int = 4
    limits: Limits = field(default_factory=Limits)

    @property
    def public_base_url(self) -> str:
        """Absolute base for the URLs in the Session (no trailing slash)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def vapid_contact(self) -> str:
        """The ``sub`` of VAPID tokens: the setting, else derived from the public base URL."""
        if self.vapid_subject:
            return self.vapid_subject
        base = self.public_base_url
        if base.lower().startswith("https://"):
            return base
        host = base.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        return f"mailto:postmaster@{host}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str) -> int | None:
    """``2G``, ``500M``, ``1024`` (octets; K/M/G/T are powers of 1024) or ``none``/empty (None: no limit).

    Raises ValueError on anything else."""
    text = value.strip().upper().removesuffix("B")
    if text in ("", "NONE"):
        return None
    unit = text[-1] if text[-1] in _SIZE_UNITS else ""
    number = text[: len(text) - len(unit)].strip()
    if not number.isdigit():
        raise ValueError(f"{value!r} is not a size like 2G, 500M or 1048576 (or none)")
    return int(number) * _SIZE_UNITS[unit]


def _quota(env: Mapping[str, str], name: str, sizes: bool) -> int | None:
    raw = env.get(name, "")
    try:
        if sizes:
            return parse_size(raw)
        if raw.strip().lower() in ("", "none"):
            return None
        if not raw.strip().isdigit():
            raise ValueError(raw)
        return int(raw)
    except ValueError:
        what = "a size like 2G, 500M or 1048576" if sizes else "a whole number"
        raise ConfigError(f"{name}={raw!r} is not {what} (or none)") from None


def _vapid_subject(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if value and not (value.startswith("mailto:") or value.startswith("https://")) or len(value) > 256:
        raise ConfigError(f"{name}={value!r} must be a mailto: or https:// URI (RFC 8292 §2.1)")
    return value


#: The languages search stems (ISO 639-1 code → Snowball stemmer): those PyStemmer and the detector both know.
STEMMERS = {
    "ar": "arabic",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "nl": "dutch",
    "no": "norwegian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
}


def _search_languages(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """``detect`` (default): None; ``off``: (); else comma-separated codes of :data:`STEMMERS`."""
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "detect"):
        return None
    if raw in ("off", "none"):
        return ()
    codes = tuple(dict.fromkeys(code.strip() for code in raw.split(",") if code.strip()))
    for code in codes:
        if code not in STEMMERS:
            raise ConfigError(f"{name}: {code!r} is not detect, off or a language code of {', '.join(STEMMERS)}")
    return codes


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "yes", "true"):
        return True
    if raw in ("0", "off", "no", "false"):
        return False
    raise ConfigError(f"{name}={raw!r} is not on or off")


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None when ``value`` is no origin."""
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    out = []
    for item in (env.get(name) or "").replace(",", " ").split():
        origin = "*" if item == "*" else normalize_origin(item)
        if origin is None:
            raise ConfigError(f"{name}: {item!r} is not an origin like https://app.example.org (or *)")
        out.append(origin)
    return tuple(dict.fromkeys(out))


def parse_networks(value: str, name: str) -> tuple[IPNetwork, ...]:
    """Comma- or space-separated CIDRs (``10.0.0.0/8``; a bare address is one host) or raise ConfigError."""
    out = []
    for item in value.replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(item))
        except ValueError as e:
            raise ConfigError(f"{name}: {item!r} is not a network like 10.0.0.0/8 ({e})") from None
    if not out:
        raise ConfigError(f"{name} names no network")
    return tuple(dict.fromkeys(out))


def _networks(env: Mapping[str, str], name: str, default: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
    raw = (env.get(name) or "").strip()
    return parse_networks(raw, name) if raw else default


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, as in HOST:PORT) means this machine's loopback, without DNS."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_host_port(value: str, name: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:24`` for IPv6) or raise ConfigError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("JMAPMONO_DATA_DIR") or "data")
    database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'jmapmono.sqlite3'}"
    scheme = urlsplit(database_url).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ConfigError(f"DATABASE_URL scheme {scheme!r} is not supported (use sqlite:/// or postgresql://)")
    broker_url = env.get("BROKER_URL") or "memory://localhost/"
    if urlsplit(broker_url).scheme not in ("memory", "amqp", "amqps", "pyamqp"):
        raise ConfigError(f"BROKER_URL {broker_url!r} is not supported (use memory:// or amqp://)")
    lmtp = env.get("JMAPMONO_LMTP_LISTEN", "127.0.0.1:8024")
    if lmtp.lower() in ("", "off", "none"):
        lmtp_listen = None
    else:
        parse_host_port(lmtp, "JMAPMONO_LMTP_LISTEN")
        lmtp_listen = lmtp
    log_level = (env.get("JMAPMONO_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"JMAPMONO_LOG_LEVEL={log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    base_url = env.get("JMAPMONO_BASE_URL", "")
    if base_url and urlsplit(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"JMAPMONO_BASE_URL={base_url!r} must start with http:// or https://")
    relay = (env.get("JMAPMONO_SMTP_RELAY") or "").strip()
    if relay.lower() in ("", "off", "none"):
        smtp_relay = None
    else:
        parse_host_port(relay, "JMAPMONO_SMTP_RELAY")
        smtp_relay = relay
    relay_user = env.get("JMAPMONO_SMTP_RELAY_USER", "")
    relay_password = env.get("JMAPMONO_SMTP_RELAY_PASSWORD", "")
    if bool(relay_user) != bool(relay_password):
        raise ConfigError("JMAPMONO_SMTP_RELAY_USER and JMAPMONO_SMTP_RELAY_PASSWORD go together")
    relay_starttls = _flag(env, "JMAPMONO_SMTP_RELAY_STARTTLS", False)
    if smtp_relay and relay_user and not relay_starttls and not is_loopback_host(parse_host_port(smtp_relay, "")[0]):
        raise ConfigError(
            "JMAPMONO_SMTP_RELAY_USER is set but JMAPMONO_SMTP_RELAY_STARTTLS is off: the relay password would cross "
            "the network in clear text (turn STARTTLS on, or use a relay on loopback)"
        )
    relay_ca = (env.get("JMAPMONO_SMTP_RELAY_CA_FILE") or "").strip()
    if relay_ca and not (os.path.isfile(relay_ca) and os.access(relay_ca, os.R_OK)):
        raise ConfigError(f"JMAPMONO_SMTP_RELAY_CA_FILE={relay_ca!r} is not a readable file")
    lmtp_networks = _networks(env, "JMAPMONO_LMTP_ALLOWED_NETWORKS", LOOPBACK_NETWORKS)
    min_ping = _int(env, "JMAPMONO_EVENTSOURCE_MIN_PING", 10, 1)
    max_ping = _int(env, "JMAPMONO_EVENTSOURCE_MAX_PING", 300, 300)
    if min_ping > 30:
        raise ConfigError(f"JMAPMONO_EVENTSOURCE_MIN_PING={min_ping} must be at most 30 (RFC 8620 §7.3)")
    d = Limits()
    limits = Limits(
        max_size_upload=_int(env, "JMAPMONO_MAX_SIZE_UPLOAD", d.max_size_upload, 1),
        max_concurrent_upload=_int(env, "JMAPMONO_MAX_CONCURRENT_UPLOAD", d.max_concurrent_upload, 1),
        max_size_request=_int(env, "JMAPMONO_MAX_SIZE_REQUEST", d.max_size_request, 1024),
        max_concurrent_requests=_int(env, "JMAPMONO_MAX_CONCURRENT_REQUESTS", d.max_concurrent_requests, 1),
        max_calls_in_request=_int(env, "JMAPMONO_MAX_CALLS_IN_REQUEST", d.max_calls_in_request, 1),
        max_objects_in_get=_int(env, "JMAPMONO_MAX_OBJECTS_IN_GET", d.max_objects_in_get, 1),
        max_objects_in_set=_int(env, "JMAPMONO_MAX_OBJECTS_IN_SET", d.max_objects_in_set, 1),
    )
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        host=env.get("JMAPMONO_HOST") or "127.0.0.1",
        port=_int(env, "PORT", 8080, 1),
        base_url=base_url,
        lmtp_listen=lmtp_listen,
        max_message_size=_int(env, "JMAPMONO_MAX_MESSAGE_SIZE", 50_000_000, 1024),
        log_level=log_level,
        auth_cache_seconds=_int(env, "JMAPMONO_AUTH_CACHE_SECONDS", 60, 0),
        login_failures_per_minute=_int(env, "JMAPMONO_LOGIN_FAILURES_PER_MINUTE", 10, 1),
        trusted_proxies=_int(env, "JMAPMONO_TRUSTED_PROXIES", 0, 0),
        upload_ttl_seconds=_int(env, "JMAPMONO_UPLOAD_TTL_SECONDS", 3600, 3600),
        changes_retention_days=_int(env, "JMAPMONO_CHANGES_RETENTION_DAYS", 30, 1),
        dead_letter_retention_days=_int(env, "JMAPMONO_DEAD_LETTER_RETENTION_DAYS", 30, 1),
        housekeeping_seconds=_int(env, "JMAPMONO_HOUSEKEEPING_SECONDS", 0, 0),
        smtp_relay=smtp_relay,
        smtp_relay_user=relay_user,
        smtp_relay_password=relay_password,
        smtp_relay_starttls=relay_starttls,
        smtp_relay_ca_file=Path(relay_ca) if relay_ca else None,
        lmtp_allowed_networks=lmtp_networks,
        vacation_reply_days=_int(env, "JMAPMONO_VACATION_REPLY_DAYS", 7, 1),
        ws_ping_seconds=_int(env, "JMAPMONO_WS_PING_SECONDS", 30, 0),
        ws_ping_timeout_seconds=_int(env, "JMAPMONO_WS_PING_TIMEOUT_SECONDS", 20, 1),
        ws_allowed_origins=_origins(env, "JMAPMONO_WS_ALLOWED_ORIGINS"),
        ws_outbound_bytes=_int(env, "JMAPMONO_WS_OUTBOUND_BYTES", 1_000_000, 65536),
        ws_ticket_seconds=_int(env, "JMAPMONO_WS_TICKET_SECONDS", 60, 5),
        ws_deflate=_flag(env, "JMAPMONO_WS_DEFLATE", True),
        eventsource_min_ping=min_ping,
        eventsource_max_ping=max_ping,
        eventsource_write_timeout_seconds=_int(env, "JMAPMONO_EVENTSOURCE_WRITE_TIMEOUT", 60, 5),
        push_allow_private_targets=_flag(env, "JMAPMONO_PUSH_ALLOW_PRIVATE_TARGETS", False),
        push_ttl_seconds=_int(env, "JMAPMONO_PUSH_TTL_SECONDS", 86400, 0),
        push_timeout_seconds=_int(env, "JMAPMONO_PUSH_TIMEOUT_SECONDS", 10, 1),
        vapid_subject=_vapid_subject(env, "JMAPMONO_VAPID_SUBJECT"),
        max_push_connections_per_user=_int(env, "JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER", 100, 1),
        http_idle_timeout=_int(env, "JMAPMONO_HTTP_IDLE_TIMEOUT", 60, 1),
        max_concurrent_downloads=_int(env, "JMAPMONO_MAX_CONCURRENT_DOWNLOADS", 8, 1),
        workers=_int(env, "JMAPMONO_WORKERS", os.cpu_count() or 1, 1),
        metrics_allowed_networks=_networks(env, "JMAPMONO_METRICS_ALLOWED_NETWORKS", LOOPBACK_NETWORKS),
        ready_outbox_max_age_seconds=_int(env, "JMAPMONO_READY_OUTBOX_MAX_AGE", 60, 1),
        broker_heartbeat_seconds=_int(env, "JMAPMONO_BROKER_HEARTBEAT", 10, 1),
        broker_node_queue_expires_seconds=_int(env, "JMAPMONO_BROKER_NODE_QUEUE_EXPIRES", 60, 1),
        db_connect_timeout_seconds=_int(env, "JMAPMONO_DB_CONNECT_TIMEOUT", 5, 1),
        parsed_cache_mb=_int(env, "JMAPMONO_PARSED_CACHE_MB", 32, 0),
        rendered_cache_mb=_int(env, "JMAPMONO_RENDERED_CACHE_MB", 16, 0),
        web_inbox=_flag(env, "JMAPMONO_WEB_INBOX", True),
        max_html_part_bytes=_int(env, "JMAPMONO_MAX_HTML_PART_BYTES", 2_000_000, 1024),
        quota_storage=_quota(env, "JMAPMONO_QUOTA_STORAGE", sizes=True),
        quota_messages=_quota(env, "JMAPMONO_QUOTA_MESSAGES", sizes=False),
        search_languages=_search_languages(env, "JMAPMONO_SEARCH_LANGUAGES"),
        sieve_max_script_size=_int(env, "JMAPMONO_SIEVE_MAX_SCRIPT_SIZE", 65_536, 64),
        sieve_max_scripts=_int(env, "JMAPMONO_SIEVE_MAX_SCRIPTS", 16, 1),
        sieve_max_rules=_int(env, "JMAPMONO_SIEVE_MAX_RULES", 2_000, 1),
        sieve_max_redirects=_int(env, "JMAPMONO_SIEVE_MAX_REDIRECTS", 4, 0),
        limits=limits,
    )
