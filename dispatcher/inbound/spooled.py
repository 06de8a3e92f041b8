"""Applying spooled unsubscribes once the database is back (see :mod:`spool`)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.db import session_scope
from dispatcher.inbound.sources import apply_raw
from dispatcher.settings import Settings
from suppression.events import Hit
from suppression.tokens import BadToken, LinkPurpose, TokenSigner
from suppression.unsubscribe import resolve_link, unsubscribe_address

log = logging.getLogger(__name__)


def apply_spooled(
    sessions: sessionmaker[Session],
    settings: Settings,
    signer: TokenSigner,
    payload: dict[str, Any],
    body: bytes,
) -> None:
    """Apply one spooled request; raises OperationalError while the database is away."""
    kind = payload.get("kind")
    if kind == "mailto":
        apply_raw(
            sessions,
            settings,
            signer,
            body,
            source="spool",
            envelope=tuple(payload.get("envelope", ())),
        )
    elif kind == "one_click":
        hit = Hit(ip=payload.get("ip"), user_agent=payload.get("user_agent"), source="spool")
        try:
            with session_scope(sessions) as session:
                subject, address = resolve_link(
                    session, signer, LinkPurpose.UNSUBSCRIBE, str(payload.get("token", ""))
                )
                unsubscribe_address(
                    session,
                    address,
                    stop_queued=stop_queued,
                    hit=hit,
                    source="one_click",
                    campaign_id=subject.campaign_id,
                )
        except BadToken as exc:  # its address was erased meanwhile: nothing to apply
            log.warning("spool: one-click token no longer resolves (%s)", exc.outcome)
    else:
        log.error("spool: unknown entry kind %r skipped", kind)
