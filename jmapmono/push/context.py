"""What the push layer needs of the process it runs in (the runtime provides it; this layer never imports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from jmapmono.jmap.context import JmapServices

if TYPE_CHECKING:
    from jmapmono.events.bus import EventBus
    from jmapmono.push.eventsource import Streams
    from jmapmono.push.vapid import VapidKeys
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
    @property
    def vapid(self) -> VapidKeys: ...


def push_services(services: JmapServices) -> PushServices:
    """The services of a JMAP call as a push method sees them (``PushSubscription/set`` sends through
    ``webpush``). Every caller of ``jmap.api.execute`` passes PushServices (the HTTP front end and the
    WebSocket), but ``Invocation.services`` is typed by the JMAP layer, which knows no push."""
    return cast("PushServices", services)
