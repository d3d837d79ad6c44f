"""The ``urn:ietf:params:jmap:websocket`` capability (RFC 8887 §3): where the WebSocket is, and that it pushes.

The URL is absolute, built from the public base URL (``ws://`` for ``http://``, ``wss://`` for
``https://``); the endpoint itself is jmapmono/push/websocket.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jmapmono.jmap.registry import WEBSOCKET, capability

if TYPE_CHECKING:
    from jmapmono.config import Config
    from jmapmono.jmap.context import JmapServices

WEBSOCKET_PATH = "/jmap/ws"


def websocket_url(config: Config) -> str:
    """The absolute WebSocket URL clients connect to."""
    base = config.public_base_url
    scheme, _, rest = base.partition("://")
    return ("wss" if scheme.lower() == "https" else "ws") + "://" + rest + WEBSOCKET_PATH


def _session_value(services: JmapServices) -> dict[str, Any]:
    return {"url": websocket_url(services.config), "supportsPush": True}


capability(WEBSOCKET, _session_value, None, primary=False)
