"""The two mails the public forms send: a signup confirmation and a preferences link.

Neither is marketing: no List-Unsubscribe, no offers; each goes to one address that just
asked for it, through the same transports and message builder as campaign mail. Templates
are ``templates/email/_signup/<kind>.{subject.txt,txt,html}`` (the leading ``_`` keeps them
out of the campaign template list).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatcher.sending.messages import build_message
from dispatcher.sending.rendering import RenderedMessage
from dispatcher.sending.sandbox import make_environment
from dispatcher.sending.transports import open_transport
from dispatcher.settings import Settings


class MailKind(enum.StrEnum):
    CONFIRM = "confirm"
    PREFERENCES = "preferences"


@dataclass(frozen=True)
class OutgoingMail:
    """A mail decided inside a request's transaction, sent after the page is answered.

    ``limit_key``: the per-address counter it used, given back if the mail cannot go.
    ``signup_id``: the pending signup it confirms (its mail status is recorded there).
    """

    kind: MailKind
    to_address: str
    to_name: str | None
    message_id: str
    context: dict[str, Any]
    limit_key: str
    signup_id: int | None = None
    address_id: int | None = None


def new_message_id(settings: Settings, kind: MailKind) -> str:
    """Unguessable and unique: it is part of the consent proof, not derived from the address."""
    domain = parseaddr(settings.sender)[1].rpartition("@")[2] or "localhost"
    return f"<{kind.value}.{secrets.token_hex(12)}@{domain}>"


@lru_cache(maxsize=4)
def _environment(folder: Path) -> ImmutableSandboxedEnvironment:
    # The same sandbox as every other mail template (ARCHITECTURE invariant 11): the
    # templates are ours, but the values in them come from the public form.
    return make_environment(FileSystemLoader(str(folder)))


def render(settings: Settings, mail: OutgoingMail) -> RenderedMessage:
    env = _environment(settings.templates_dir / "email" / "_signup")
    context = {
        "company_name": settings.company_name,
        "postal_address": settings.postal_address,
        **mail.context,
    }
    name = mail.kind.value
    subject = env.get_template(f"{name}.subject.txt").render(context).strip()
    return RenderedMessage(
        subject=subject,
        text=env.get_template(f"{name}.txt").render(context),
        html=env.get_template(f"{name}.html").render(context),
    )


def send(settings: Settings, mail: OutgoingMail) -> None:
    """Render, build and hand over ``mail``; raises what the transport raises."""
    message = build_message(
        render(settings, mail),
        sender=settings.sender,
        to_address=mail.to_address,
        to_name=mail.to_name,
        message_id=mail.message_id,
        list_unsubscribe_url=None,
        unsubscribe_mailto=None,
    )
    envelope_from = parseaddr(settings.sender)[1]
    with open_transport(settings.mail_url, timeout=settings.smtp_timeout_seconds) as transport:
        transport.send(envelope_from, mail.to_address, message)
