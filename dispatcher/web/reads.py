"""What a recipient link page reads, in one statement built once per process.

Link scanners open every link of every message within seconds of delivery, so these pages
are the app's hottest path: each read here is one prebuilt statement with the ids bound per
request (building a statement costs more CPU than running it), and returns plain values, not
ORM objects. On PostgreSQL the page's (folded) audit row is written by the same statement;
on SQLite, which has no INSERT inside WITH, by a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import BindParameter, Table, bindparam, exists, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dispatcher.models import Campaign
from suppression.events import ROW_COLUMNS, bound_event, event_row, folding, record_event
from suppression.models import Address, Event, Reason, Suppression
from suppression.sql import core, inline_constants
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


def read_link(
    session: Session, subject: LinkSubject, record: dict[str, Any] | None = None
) -> LinkRead:
    """One statement; :class:`BadToken` (``unknown_subject``) when the address is gone, the
    same answer a forged link gets (and nothing is recorded).

    ``record``: the keyword arguments of :func:`suppression.events.record_event` for the
    hit (its ``address_id`` is the link's), written with the read.
    """
    params: dict[str, Any] = {
        "r_address_id": subject.address_id,
        "r_campaign_id": subject.campaign_id,
    }
    connection = core(session)
    one_statement = record is not None and connection.dialect.name == "postgresql"
    if record is not None and one_statement:
        values = event_row(**{**record, "address_id": subject.address_id})
        params.update({f"h_{k}": v for k, v in values.items() if k != "address_id"})
        row = connection.execute(_read_and_record(), params).first()
    else:
        row = connection.execute(_statement(), params).first()
    if row is None:
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    if record is not None and not one_statement:
        record_event(session, **{**record, "address_id": subject.address_id})
    return LinkRead(
        address_id=subject.address_id,
        address=row.address,
        campaign_id=subject.campaign_id,
        campaign_name=row.campaign_name,
        unsubscribed=bool(row.unsubscribed),
    )


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


@cache
def _read_and_record() -> Any:
    """PostgreSQL: :func:`_statement` that also writes the hit's folding audit row (none when
    the address is gone: the INSERT selects from it)."""
    events = cast(Table, Event.__table__)
    addresses = Address.__table__.c
    source = bound_event(
        "h",
        address_id=addresses.id,
        count=bindparam("h_count", type_=events.c.count.type),
        fold_key=bindparam("h_fold_key", type_=events.c.fold_key.type),
    ).where(addresses.id == bindparam("r_address_id"))
    hit = folding(postgresql.insert(events).from_select(list(ROW_COLUMNS), source)).cte("hit")
    read = _statement()
    return inline_constants(read.add_columns(select(hit.c.count).scalar_subquery().label("hits")))
