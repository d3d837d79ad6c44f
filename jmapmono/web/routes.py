"""Every blueprint of the HTTP front end, in registration order."""

from __future__ import annotations

from flask import Blueprint

from jmapmono.web import app_passwords, blobs, eventsource, html_part, inbox, session, websocket

BLUEPRINTS: list[Blueprint] = [
    session.bp,
    blobs.bp,
    app_passwords.bp,
    websocket.bp,
    eventsource.bp,
    html_part.bp,
    inbox.bp,
]
