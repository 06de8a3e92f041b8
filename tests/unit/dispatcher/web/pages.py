"""Small helpers for the recipient page tests: links, form tokens, and the rows to check."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import Delivery
from dispatcher.settings import Settings
from dispatcher.web.hits import flush_all
from suppression.consent import current_consent
from suppression.models import Event, Scope
from suppression.suppressions import active_suppressions
from suppression.tokens import LinkPurpose, TokenSigner

ADDRESS = "ann.smith@example.com"


def link(settings: Settings, purpose: LinkPurpose, address_id: int) -> str:
    token = TokenSigner(settings.secret_keys).sign_link(purpose, address_id, 1)
    prefix = "/u/" if purpose is LinkPurpose.UNSUBSCRIBE else "/preferences/"
    return prefix + token


def state(session_factory: sessionmaker[Session], address_id: int) -> tuple:
    """Active suppressions, marketing and affiliates consent, and queued deliveries."""
    with session_scope(session_factory) as session:
        sups = sorted((s.reason, s.scope) for s in active_suppressions(session, address_id))
        marketing = current_consent(session, address_id, Scope.MARKETING)
        affiliates = current_consent(session, address_id, Scope.AFFILIATES)
        queued = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "queued")
        )
        return (
            sups,
            marketing.status if marketing else None,
            affiliates.status if affiliates else None,
            queued,
        )


def events(session_factory: sessionmaker[Session], kind: str = "web_hit") -> list[Event]:
    """The audit trail once the page views counted in memory are written (as a clean
    shutdown writes them: ``dispatcher/web/hits.py``), in the order things happened: a
    page view's row is written up to a second after it, so after later rows."""
    flush_all()
    with session_scope(session_factory) as session:
        return list(
            session.scalars(
                select(Event).where(Event.kind == kind).order_by(Event.occurred_at, Event.id)
            )
        )


def csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form token"
    return found.group(1).decode()
