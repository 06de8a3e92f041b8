"""The inbound SMTP/LMTP receiver the company's MTA forwards bounces@ and unsubscribe@ to.

Each message is applied before we answer: 250 once its transaction committed. When the
database is away, a mailto unsubscribe is written to the local spool and still gets 250 (it
is never lost and applied when the database is back); anything else gets 451, so the MTA
keeps it and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from dispatcher.inbound import spool
from dispatcher.inbound.classify import Kind, classify
from dispatcher.inbound.sources import apply_raw
from dispatcher.inbound.spooled import apply_spooled
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner

log = logging.getLogger(__name__)


class InboundHandler:
    def __init__(self, settings: Settings, sessions: sessionmaker[DbSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.signer = TokenSigner(settings.secret_keys)
        self.locals = {
            m.rpartition("@")[0].lower()
            for m in (settings.return_path, settings.unsubscribe_mailto)
            if m and "@" in m
        }

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        local = address.rpartition("@")[0].lower().split("+")[0]
        if local not in self.locals:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        rcpts = tuple(str(r) for r in envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.receive, bytes(raw), rcpts)

    def receive(self, raw: bytes, rcpts: tuple[str, ...]) -> str:
        try:
            done = apply_raw(
                self.sessions, self.settings, self.signer, raw, source="smtp", envelope=rcpts
            )
        except spool.DATABASE_AWAY:
            report = classify(raw, unsubscribe_local=self._unsubscribe_local())
            if report.kind is Kind.UNSUBSCRIBE:
                try:
                    spool.write(self.settings.spool, "mailto", {"envelope": list(rcpts)}, raw)
                except OSError:
                    log.exception("spool write failed")
                    return "451 4.3.0 cannot store the message now; try again later"
                return "250 2.0.0 accepted (spooled)"
            return "451 4.3.0 database unavailable; try again later"
        except Exception:
            log.exception("inbound message failed")
            return "451 4.3.0 temporary failure; try again later"
        return f"250 2.0.0 {'duplicate' if done.duplicate else done.outcome}"

    def _unsubscribe_local(self) -> str:
        return self.settings.unsubscribe_mailto.rpartition("@")[0].lower() or "unsubscribe"

    def apply_spooled(self, payload: dict[str, Any], body: bytes) -> None:
        apply_spooled(self.sessions, self.settings, self.signer, payload, body)


class _LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


def start_receiver(
    settings: Settings, sessions: sessionmaker[DbSession], *, host: str, port: int, lmtp: bool
) -> tuple[Controller, spool.Drainer]:
    handler = InboundHandler(settings, sessions)
    cls = _LMTPController if lmtp else Controller
    controller = cls(
        handler,
        hostname=host,
        port=port,
        data_size_limit=settings.inbound_max_bytes,
        decode_data=False,
        ready_timeout=60,
    )
    controller.start()
    drainer = spool.Drainer(settings.spool, handler.apply_spooled).start()
    return controller, drainer


def run_receiver(
    settings: Settings, sessions: sessionmaker[DbSession], *, host: str, port: int, lmtp: bool
) -> None:
    controller, drainer = start_receiver(settings, sessions, host=host, port=port, lmtp=lmtp)
    print(f"inbound: {'LMTP' if lmtp else 'SMTP'} on {host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    drainer.stop()
    controller.stop()
