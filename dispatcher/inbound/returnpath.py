"""What we put in outgoing mail so that what comes back can be traced, and reading it back.

- the envelope sender (Return-Path) is ``bounces+d<delivery id>.<tag>@domain`` (VERP);
- the Message-ID is ``<c<campaign>.<nonce>.r<contact>.<tag>@domain>``;
- the ``List-Unsubscribe`` mailto's subject carries the recipient's unsubscribe token.

Tags come from :meth:`suppression.tokens.TokenSigner.tag`, so a report that merely names a
delivery or a Message-ID of the right shape proves nothing: only a valid tag matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from dispatcher.sending.messages import message_id_for
from suppression.tokens import LinkPurpose, TokenSigner

# Bounds the scan of a (possibly huge) report for our identifiers.
MAX_CANDIDATES = 50

_TAG = r"([0-9a-fA-F]{20})"
_MESSAGE_ID = re.compile(
    rb"<c(\d{1,18})\.(?:[0-9a-zA-Z]{1,32}\.)?r(\d{1,18})\.([0-9a-fA-F]{20})@", re.IGNORECASE
)
# The characters urllib.parse.quote never escapes (a signed token has no others).
_QUOTE_LEAVES = re.compile(r"[A-Za-z0-9_.~/-]*")
_UNSUBSCRIBE_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-.]+)")


@dataclass(frozen=True)
class Trace:
    """A delivery a report names with a valid tag: by VERP (delivery id) or Message-ID."""

    delivery_id: int | None = None
    campaign_id: int | None = None
    contact_id: int | None = None
    via: str = ""


def verp_address(signer: TokenSigner, return_path: str, delivery_id: int) -> str:
    local, _, domain = return_path.rpartition("@")
    tag = signer.tag(LinkPurpose.RETURN_PATH, delivery_id)
    return f"{local}+d{delivery_id}.{tag}@{domain}"


def message_id(
    signer: TokenSigner, campaign_id: int, contact_id: int, domain: str, nonce: str
) -> str:
    """Stable per (campaign, contact), so a resend keeps its id; the campaign's random
    ``nonce`` keeps it unique across database resets and installations; the tag proves a
    report that quotes it is about a message we sent."""
    tag = signer.tag(LinkPurpose.MESSAGE_ID, campaign_id, contact_id)
    return message_id_for(campaign_id, nonce, contact_id, domain, tag)


def unsubscribe_mailto(mailbox: str, token: str) -> str:
    """``mailbox?subject=unsubscribe <token>``: the token survives any mail client."""
    if _QUOTE_LEAVES.fullmatch(token):  # our tokens: what quote() would give, without it
        return f"{mailbox}?subject=unsubscribe%20{token}"
    return f"{mailbox}?subject={quote('unsubscribe ' + token)}"


def unsubscribe_token(subject: str) -> str | None:
    found = _UNSUBSCRIBE_TOKEN.search(subject or "")
    return found.group(1) if found else None


def traces(
    signer: TokenSigner, return_path: str, raw: bytes, envelope: Iterable[str] = ()
) -> list[Trace]:
    """Deliveries named in ``raw`` (and the SMTP recipients) whose tag verifies, VERP first."""
    local = re.escape(return_path.rpartition("@")[0].encode())
    verp = re.compile(rb"\b" + local + rb"\+d(\d{1,18})\." + _TAG.encode() + rb"@", re.IGNORECASE)
    found: list[Trace] = []
    seen: set[tuple[int, ...]] = set()
    haystacks = [e.encode("utf-8", "replace") for e in envelope] + [raw]
    for hay in haystacks:
        for n, match in enumerate(verp.finditer(hay)):
            if n >= MAX_CANDIDATES:
                break
            delivery_id, tag = int(match.group(1)), match.group(2).decode()
            if (delivery_id,) in seen:
                continue
            seen.add((delivery_id,))
            if signer.check_tag(LinkPurpose.RETURN_PATH, tag, delivery_id):
                found.append(Trace(delivery_id=delivery_id, via="verp"))
    for n, match in enumerate(_MESSAGE_ID.finditer(raw)):
        if n >= MAX_CANDIDATES:
            break
        campaign_id, contact_id = int(match.group(1)), int(match.group(2))
        tag = match.group(3).decode()
        if (campaign_id, contact_id) in seen:
            continue
        seen.add((campaign_id, contact_id))
        if signer.check_tag(LinkPurpose.MESSAGE_ID, tag, campaign_id, contact_id):
            found.append(Trace(campaign_id=campaign_id, contact_id=contact_id, via="message-id"))
    return found
