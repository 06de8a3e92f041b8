"""What a recipient link page reads, in one statement built once per process.

Link scanners open every link of every message within seconds of delivery, so these pages
are the app's hottest path: each read here is one prebuilt statement with the ids bound per
request (building a statement costs more CPU than running it), and returns plain values, not
ORM objects, run on the pool's own DBAPI connection (``dispatcher.db.page_reads``). The
page's audit row is counted in process memory and written in batches
(``dispatcher/web/hits.py``), so a page view writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, bindparam, exists, select, true
from sqlalchemy.orm import Session

from dispatcher.db import PageReads, Prebuilt, rows
from dispatcher.models import Campaign
from dispatcher.web.standing import Standing, standing_of
from dispatcher.web.standing import statement as standing_statement
from suppression.models import Address, Reason, Suppression
from suppression.sql import inline_constants
from suppression.tokens import BadToken, LinkSubject, TokenOutcome


@dataclass(frozen=True)
class LinkRead:
    """The address a verified link names, the campaign that carried it, and whether the
    address has unsubscribed (an active suppression of its own, for marketing)."""

    address_id: int
    address: str
    campaign_id: int | None
    campaign_name: str | None
    unsubscribed: bool


def read_link(source: Session | PageReads, subject: LinkSubject) -> LinkRead:
    """One statement, on a session or on a page's own cursor (:func:`page_reads`);
    :class:`BadToken` (``unknown_subject``) when the address is gone, the same answer a
    forged link gets."""
    params = {"r_address_id": subject.address_id, "r_campaign_id": subject.campaign_id}
    found = rows(source, _read(), params)
    if not found:
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    address, campaign_name, unsubscribed = found[0]
    return LinkRead(
        address_id=subject.address_id,
        address=address,
        campaign_id=subject.campaign_id,
        campaign_name=campaign_name,
        unsubscribed=bool(unsubscribed),
    )


def read_preferences(
    source: Session | PageReads, subject: LinkSubject
) -> tuple[LinkRead, Standing]:
    """The preference page's link (:func:`read_link`) and what the gate says of its address
    (:func:`dispatcher.web.standing.standing`), in one statement: a page view is one round
    trip, as on the unsubscribe page. :class:`BadToken` when the address is gone."""
    params = {
        "r_address_id": subject.address_id,
        "r_campaign_id": subject.campaign_id,
        "s_address_id": subject.address_id,
    }
    found = rows(source, _preferences_read(), params)
    if not found:
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    address, campaign_name, unsubscribed = found[0][:3]
    link = LinkRead(
        address_id=subject.address_id,
        address=address,
        campaign_id=subject.campaign_id,
        campaign_name=campaign_name,
        unsubscribed=bool(unsubscribed),
    )
    return link, standing_of([row[3:] for row in found])


@cache
def _preferences_read() -> Prebuilt:
    link, now = _statement().subquery(), standing_statement().subquery()
    return Prebuilt(select(*link.c, *now.c).select_from(link.join(now, true())).order_by(now.c.id))


@cache
def _read() -> Prebuilt:
    return Prebuilt(_statement())


@cache
def _statement() -> Any:
    # Core tables, not mapped classes: the ORM has nothing to add to a read of three values.
    addresses, campaigns = Address.__table__.c, Campaign.__table__.c
    suppressions = Suppression.__table__.c
    address_id: BindParameter[int] = bindparam("r_address_id")
    campaign = (
        select(campaigns.name)
        .where(campaigns.id == bindparam("r_campaign_id"))
        .scalar_subquery()
        .label("campaign_name")
    )
    unsubscribed = (
        exists()
        .where(
            suppressions.address_id == address_id,
            suppressions.lifted_at.is_(None),
            suppressions.reason == str(Reason.UNSUBSCRIBE),
        )
        .label("unsubscribed")
    )
    return inline_constants(
        select(addresses.address, campaign, unsubscribed).where(addresses.id == address_id)
    )
