"""Every blueprint of the HTTP front end, in registration order."""

from __future__ import annotations

from flask import Blueprint

from jmapmono.push import eventsource, websocket
from jmapmono.web import api, app_passwords, blobs, session

BLUEPRINTS: list[Blueprint] = [session.bp, api.bp, blobs.bp, app_passwords.bp, websocket.bp, eventsource.bp]
