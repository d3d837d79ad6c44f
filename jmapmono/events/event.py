"""The event value that travels on a bus, and the error a publisher sees when the broker is away."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


class BusUnavailable(Exception):
    """The broker could not take the event's group copy; the caller (the outbox) should retry later.

    Raised only by :meth:`EventBus.dispatch`, and only after local key listeners were told;
    key copies for other nodes are best effort and never raise.
    """


@dataclass(frozen=True)
class Event:
    """An event: a unique ``id`` (the de-duplication key), a ``type`` and a JSON-serialisable ``payload``."""

    id: str
    type: str
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, type: str, payload: dict[str, Any] | None = None) -> Event:
        """An event with a fresh random id."""
        return cls(uuid.uuid4().hex, type, payload or {})

    def to_json(self) -> str:
        """Compact JSON; raises TypeError/ValueError when the payload is not JSON-serialisable."""
        return json.dumps({"id": self.id, "type": self.type, "payload": self.payload}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse :meth:`to_json` output; ValueError on anything else."""
        data = json.loads(text)
        if not (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and data["id"]
            and isinstance(data.get("type"), str)
            and isinstance(data.get("payload"), dict)
        ):
            raise ValueError("not an event: expected {id, type, payload}")
        return cls(data["id"], data["type"], data["payload"])
