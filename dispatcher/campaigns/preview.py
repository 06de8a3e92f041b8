"""One message of a campaign, rendered as it would be sent, for staff to look at."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.campaigns.services import get_campaign
from dispatcher.models import Contact
from dispatcher.sending.composing import ClaimedRow, MessageFactory
from dispatcher.settings import Settings
from suppression.address import canonical_address, delivery_address
from suppression.models import Address
from suppression.tokens import TokenSigner


def preview_message(session: Session, settings: Settings, campaign_id: int, to: str) -> bytes:
    """The message bytes for ``to`` (a contact's data when it is one); sends nothing.

    The links in a preview of a non-contact carry address id 0 and unsubscribe nobody.
    """
    campaign = get_campaign(session, campaign_id)
    canonical = canonical_address(to)
    found = session.execute(
        select(
            Contact.id,
            Contact.address_id,
            Contact.submitted_address,
            Contact.first_name,
            Contact.last_name,
        )
        .join(Address, Address.id == Contact.address_id)
        .where(Address.address == canonical)
    ).first()
    if found is None:
        row = ClaimedRow(0, 0, 0, delivery_address(to), "Preview", "Recipient")
    else:
        contact_id, address_id, submitted, first, last = found
        row = ClaimedRow(0, contact_id, address_id, delivery_address(submitted), first, last)
    factory = MessageFactory(settings, campaign, TokenSigner(settings.secret_keys))
    return factory.build(row)
