"""Composing the message for a claimed row: signed links, rendering, headers.

Rendering is prepared once per campaign per process; the costly CSS inlining happens there.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.services import campaign_view
from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.models import Campaign
from dispatcher.sending import stored_render
from dispatcher.sending.dkim_signing import DkimSigner
from dispatcher.sending.messages import (
    HeaderInjection,
    build_message,
    feedback_id_for,
    list_id_for,
)
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
    # The address to mail (suppression.address.delivery_address), never the matching key;
    # None when the contact's address does not match the key the gate checked: not sent.
    address: str | None
    first_name: str | None
    last_name: str | None


_LINKS = (LinkPurpose.UNSUBSCRIBE, LinkPurpose.PREFERENCES)

# Rendering is prepared once per campaign per process (CSS inlining is the costly part).
_prepared: dict[tuple[str, ...], PreparedCampaign] = {}


def _prepared_for(
    settings: Settings, campaign: Campaign, sessions: sessionmaker[Session] | None = None
) -> PreparedCampaign:
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
        prepared = _prepare(settings, campaign, sessions)
        _prepared[key] = prepared
    return prepared


def _prepare(
    settings: Settings, campaign: Campaign, sessions: sessionmaker[Session] | None
) -> PreparedCampaign:
    """The render stored when the campaign was scheduled, if it is still this process's
    render (same fingerprint); else prepared here, and stored for the other processes."""
    if sessions is None:
        return prepare_campaign(settings, campaign_view(campaign))
    with sessions() as session:
        stored = stored_render.load(session, campaign.id)
    prepared = prepare_campaign(settings, campaign_view(campaign), stored=stored)
    if stored is None or stored[0] != prepared.fingerprint:
        with session_scope(sessions) as session:
            stored_render.save(session, campaign.id, prepared)
    return prepared


_dkim: dict[tuple[str, str, str], DkimSigner] = {}


def _dkim_for(settings: Settings, sender_domain: str) -> DkimSigner | None:
    """The DKIM signer for these settings (key read once per process), or None."""
    if not settings.dkim_key_file:
        return None
    key = (settings.dkim_key_file, settings.dkim_selector, settings.dkim_domain or sender_domain)
    if key not in _dkim:
        _dkim[key] = DkimSigner(*key)
    return _dkim[key]


class MessageFactory:
    """Turns a claimed row into the bytes of its message: links, rendering, headers."""

    def __init__(
        self,
        settings: Settings,
        campaign: Campaign,
        signer: TokenSigner,
        clock: Stopwatch | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self.clock = clock or Stopwatch("")
        self.settings = settings
        self.campaign = campaign
        self.signer = signer
        self.prepared = _prepared_for(settings, campaign, sessions)
        self.sender_address = parseaddr(settings.sender)[1]
        self.sender_domain = self.sender_address.rpartition("@")[2]
        self.marketing = campaign.purpose == Purpose.MARKETING
        self.dkim = _dkim_for(settings, self.sender_domain)
        self.list_id = (
            list_id_for(settings.company_name, self.sender_domain, campaign.purpose)
            if self.marketing
            else None
        )
        self.feedback_id = feedback_id_for(campaign.id, campaign.purpose, self.sender_domain)

    def links(self, address_id: int) -> tuple[str, str]:
        return self._links(address_id)[:2]

    def _links(self, address_id: int) -> tuple[str, str, str]:
        base = self.settings.base_url
        unsubscribe, preferences = self.signer.sign_links(_LINKS, address_id, self.campaign.id)
        return f"{base}/u/{unsubscribe}", f"{base}/preferences/{preferences}", unsubscribe

    def envelope_from(self, row: ClaimedRow) -> str:
        """The per-delivery return path (VERP), so a bounce names its delivery."""
        if not self.settings.return_path:
            return self.sender_address
        return returnpath.verp_address(self.signer, self.settings.return_path, row.delivery_id)

    def build(self, row: ClaimedRow) -> bytes:
        with self.clock.stage("sign"):
            unsubscribe_url, preferences_url, token = self._links(row.address_id)
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
            message = self._build(rendered, row, name, unsubscribe_url, token)
        if self.dkim is not None:
            with self.clock.stage("dkim"):
                message = self.dkim.sign(message)
        return message

    def _build(
        self,
        rendered: RenderedMessage,
        row: ClaimedRow,
        name: str | None,
        unsubscribe_url: str,
        token: str,
    ) -> bytes:
        if row.address is None:
            raise HeaderInjection("the To header has no address that matches the contact; not sent")
        mailto = self.settings.unsubscribe_mailto
        if mailto and self.marketing:
            mailto = returnpath.unsubscribe_mailto(mailto, token)
        return build_message(
            rendered,
            sender=self.settings.sender,
            to_address=row.address,
            to_name=name,
            message_id=returnpath.message_id(
                self.signer,
                self.campaign.id,
                row.contact_id,
                self.sender_domain,
                self.campaign.message_nonce,
            ),
            list_unsubscribe_url=unsubscribe_url if self.marketing else None,
            unsubscribe_mailto=mailto if self.marketing else None,
            list_id=self.list_id,
            feedback_id=self.feedback_id,
            bulk=True,
        )
