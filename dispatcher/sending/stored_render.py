"""A campaign's prepared render kept in the database, so that preparing it (premailer's CSS
inlining, lxml and cssutils: ~13 MB a process and tens of milliseconds) happens in the process
that creates or schedules the campaign, not in every sending process.

A stored render is used only when its fingerprint is the one the sending process computes
from the template sources, subject and settings it sees (:func:`prepare_campaign`); otherwise
the process prepares the campaign itself, as before, and stores that for the others.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.models import CampaignRender
from dispatcher.sending.rendering import PreparedCampaign
from suppression.models import utcnow
from suppression.sql import insert_for


def load(session: Session, campaign_id: int) -> tuple[str, str] | None:
    """``(fingerprint, parts)`` stored for the campaign, or None."""
    row = session.execute(
        select(CampaignRender.fingerprint, CampaignRender.parts).where(
            CampaignRender.campaign_id == campaign_id
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def save(session: Session, campaign_id: int, prepared: PreparedCampaign) -> None:
    """Store (or replace) the campaign's prepared render; nothing when it has no fast path."""
    stored = prepared.stored()
    if stored is None:
        return
    fingerprint, parts = stored
    values = {"fingerprint": fingerprint, "parts": parts, "created_at": utcnow()}
    session.execute(
        insert_for(session, CampaignRender)
        .values(campaign_id=campaign_id, **values)
        .on_conflict_do_update(index_elements=["campaign_id"], set_=values)
    )
