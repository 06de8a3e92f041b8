"""The web app's spool drainer: started when a request is spooled, or at start-up when the
spool already holds entries (a restart while the database was away)."""

from __future__ import annotations

import threading

from flask import Flask

from dispatcher.inbound import spool
from dispatcher.inbound.spooled import apply_spooled
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner

_LOCK = threading.Lock()


def start_drainer(app: Flask) -> None:
    with _LOCK:
        if "dispatcher.drainer" in app.extensions:
            return
        settings: Settings = app.config["DISPATCHER_SETTINGS"]
        sessions = app.extensions["dispatcher.sessions"]
        signer = TokenSigner(settings.secret_keys)
        app.extensions["dispatcher.drainer"] = spool.Drainer(
            settings.spool,
            lambda payload, body: apply_spooled(sessions, settings, signer, payload, body),
            every=2.0,
        ).start()


def drain_if_pending(app: Flask) -> None:
    settings: Settings = app.config["DISPATCHER_SETTINGS"]
    if spool.pending(settings.spool):
        start_drainer(app)
