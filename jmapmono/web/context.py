"""What the HTTP front end needs of the process it runs in (the runtime provides it; never imported here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flask import current_app

from jmapmono.push.context import PushServices

if TYPE_CHECKING:
    from jmapmono.accounts.authn import Authenticator


class WebServices(PushServices, Protocol):
    """Every route authenticates through the process's one authenticator (its caches and limits)."""

    @property
    def authenticator(self) -> Authenticator: ...

    def buses_ready(self) -> bool | None: ...


def current_services() -> WebServices:
    """The services of the app serving the current request (``create_app`` put them there)."""

    return current_app.config["SERVICES"]
