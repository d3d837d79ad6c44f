"""What the push layer needs of the process it runs in (the runtime provides it; this layer never imports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from jmapmono.jmap.context import JmapServices

if TYPE_CHECKING:
    from jmapmono.events.bus import EventBus
    from jmapmono.push.eventsource import Streams
    from jmapmono.push.webpush import WebPushSender
    from jmapmono.push.ws_session import Hub


class PushServices(JmapServices, Protocol):
    """A WebSocket runs JMAP requests and listens on the JMAP bus; the hubs hold this process's connections."""

    @property
    def jmap_bus(self) -> EventBus: ...
    @property
    def websockets(self) -> Hub: ...
    @property
    def event_streams(self) -> Streams: ...
    @property
    def webpush(self) -> WebPushSender: ...
