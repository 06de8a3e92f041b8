"""Composing the message for a claimed row: signed links, rendering, headers.

Rendering is prepared once per campaign per process; the costly CSS inlining happens there.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from dispatcher.campaigns.services import campaign_view
from dispatcher.models import Campaign
from dispatcher.sending.messages import build_message, message_id_for
from dispatcher.sending.rendering import (
    PreparedCampaign,
    Recipient,
    RenderedMessage,
    prepare_campaign,
)
from dispatcher.sending.stages import Stopwatch
from dispatcher.settings import Settings
from suppression.gate import Purpose
from suppression.tokens import LinkPurpose, TokenSigner


@dataclass(frozen=True)
class ClaimedRow:
    delivery_id: int
    contact_id: int
    address_id: int
    address: str
    first_name: str | None
    last_name: str | None


# Rendering is prepared once per campaign per process (CSS inlining is the costly part).
_prepared: dict[tuple[str, ...], PreparedCampaign] = {}


def _prepared_for(settings: Settings, campaign: Campaign) -> PreparedCampaign:
    key = (
        settings.database_url,
        str(campaign.id),
        campaign.subject,
        campaign.template,
        str(campaign.content_id),
        campaign.purpose,
        str(settings.templates_dir),
        settings.base_url,
    )
    prepared = _prepared.get(key)
    if prepared is None:
        if len(_prepared) > 32:
            _prepared.clear()
        prepared = prepare_campaign(settings, campaign_view(campaign))
        _prepared[key] = prepared
    return prepared


class MessageFactory:
    """Turns a claimed row into the bytes of its message: links, rendering, headers."""

    def __init__(
        self,
        settings: Settings,
        campaign: Campaign,
        signer: TokenSigner,
        clock: Stopwatch | None = None,
    ) -> None:
        self.clock = clock or Stopwatch("")
        self.settings = settings
        self.campaign = campaign
        self.signer = signer
        self.prepared = _prepared_for(settings, campaign)
        self.sender_address = parseaddr(settings.sender)[1]
        self.sender_domain = self.sender_address.rpartition("@")[2]
        self.marketing = campaign.purpose == Purpose.MARKETING

    def links(self, address_id: int) -> tuple[str, str]:
        base = self.settings.base_url
        unsubscribe = self.signer.sign_link(LinkPurpose.UNSUBSCRIBE, address_id, self.campaign.id)
        preferences = self.signer.sign_link(LinkPurpose.PREFERENCES, address_id, self.campaign.id)
        return f"{base}/u/{unsubscribe}", f"{base}/preferences/{preferences}"

    def build(self, row: ClaimedRow) -> bytes:
        with self.clock.stage("sign"):
            unsubscribe_url, preferences_url = self.links(row.address_id)
        with self.clock.stage("render"):
            rendered = self.prepared.render(
                Recipient(
                    first_name=row.first_name,
                    last_name=row.last_name,
                    unsubscribe_url=unsubscribe_url,
                    preferences_url=preferences_url,
                )
            )
        name = " ".join(p for p in (row.first_name, row.last_name) if p) or None
        with self.clock.stage("build"):
            return self._build(rendered, row, name, unsubscribe_url)

    def _build(
        self, rendered: RenderedMessage, row: ClaimedRow, name: str | None, unsubscribe_url: str
    ) -> bytes:
        return build_message(
            rendered,
            sender=self.settings.sender,
            to_address=row.address,
            to_name=name,
            message_id=message_id_for(self.campaign.id, row.contact_id, self.sender_domain),
            list_unsubscribe_url=unsubscribe_url if self.marketing else None,
            unsubscribe_mailto=self.settings.unsubscribe_mailto if self.marketing else None,
        )
