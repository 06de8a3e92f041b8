"""The recipients the recipient-page benchmarks click for: contacts, a campaign with their
deliveries queued (so an unsubscribe has mail to stop), and signed links."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text

from bench.common import populate
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade
from dispatcher.models import Contact
from dispatcher.settings import Settings
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_sending_campaign

SPARE = 50  # addresses kept out of the measured lists (warm-up requests use them)


@dataclass(frozen=True)
class Population:
    campaign_id: int
    address_ids: list[int]
    unsubscribe: list[str]
    preferences: list[str]
    spare_unsubscribe: list[str]
    spare_preferences: list[str]


def prepare(settings: Settings, contacts: int) -> Population:
    """Migrate, add ``contacts`` contacts (10% never asked, 10% suppressed: as
    :func:`bench.common.populate`) and as many past recipients who unsubscribed, queue a
    marketing campaign to the contacts, sign their links."""
    upgrade(settings)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    if engine.dialect.name == "postgresql":
        populate(settings.database_url, contacts, unsubscribed=contacts)
    else:
        from tests.factories import bulk_contacts

        with session_scope(sessions) as session:
            bulk_contacts(session, contacts, not_opted_in_every=10, suppressed_every=10)
    with session_scope(sessions) as session:
        campaign_id, _ = make_sending_campaign(session)
        ids = list(session.scalars(select(Contact.address_id).order_by(Contact.address_id)))
    if engine.dialect.name == "postgresql":
        # The planner's statistics for the rows just written, as a real fan-out has them
        # (``refresh_statistics``) and autovacuum gathers them for the rest within a minute
        # or so: without them PostgreSQL may keep planning the one-click's statements
        # afresh on every execution instead of reusing a generic plan (0.5 ms or more of
        # its CPU per click), and a run measures whether autovacuum came by first.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    signer = TokenSigner(settings.secret_keys)
    unsub = [signer.sign_link(LinkPurpose.UNSUBSCRIBE, i, campaign_id) for i in ids]
    prefs = [signer.sign_link(LinkPurpose.PREFERENCES, i, campaign_id) for i in ids]
    return Population(
        campaign_id=campaign_id,
        address_ids=ids[:-SPARE],
        unsubscribe=unsub[:-SPARE],
        preferences=prefs[:-SPARE],
        spare_unsubscribe=unsub[-SPARE:],
        spare_preferences=prefs[-SPARE:],
    )
