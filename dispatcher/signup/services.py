"""Double opt-in signup and the preferences-link request, as services the pages call.

The rules, in order, for a signup:

- one answer for every address (new, known, suppressed, over its daily limit): the page
  never tells whether an address is ours;
- an address suppressed for a reason only staff may lift (bounce, complaint, postal request,
  legal, manual), or that the gate keeps from every mail, gets no mail at all;
- at most one confirmation mail per address per day, counted in the database;
- nothing is consent until the link in that mail is followed and confirmed: then the consent
  ledger gets the opt-in (source ``signup:<id>``, the policy version, time and IP) and the
  signup row holds the rest of the proof (browser, form, wording, the mail's Message-ID). An
  address that had unsubscribed is re-subscribed by the same rule as the preference page
  (:func:`suppression.unsubscribe.resubscribe`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import Contact, SignupRequest
from dispatcher.settings import Settings
from dispatcher.signup import limits
from dispatcher.signup.mail import MailKind, OutgoingMail, new_message_id, send
from suppression.address import (
    InvalidAddress,
    address_digest,
    canonical_address,
    delivery_address,
)
from suppression.consent import record_consent
from suppression.erasure import erased_among
from suppression.events import Hit, record_event
from suppression.gate import Purpose, blocking_reason
from suppression.models import Address, ConsentStatus, Scope, utcnow
from suppression.registry import ensure_address
from suppression.tokens import BadToken, LinkPurpose, TokenOutcome, TokenSigner
from suppression.unsubscribe import CannotResubscribe, resubscribe, staff_only_suppressions

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
MAIL_PER_ADDRESS_PER_DAY = 1


class SignupError(ValueError):
    """A form the person must correct; the message names the field and says how."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class OtherMailbox(CannotResubscribe):
    """The signup's address shares its matching key with a contact we mail at another
    spelling (``Straße@`` and ``strasse@``): the link proved only the signup's mailbox."""


@dataclass(frozen=True)
class SignupForm:
    email: str
    marketing: bool
    affiliates: bool
    first_name: str | None = None
    last_name: str | None = None
    attributes: dict[str, str] | None = None


def ip_allowed(session: Session, settings: Settings, ip: str | None) -> bool:
    """Count one public-form request from ``ip``; False once over the configured limit."""
    if settings.signup_ip_limit <= 0:
        return True
    return limits.take(
        session,
        f"ip:{ip or 'unknown'}",
        limit=settings.signup_ip_limit,
        window_seconds=settings.signup_ip_window_seconds,
    )


def _mail_key(kind: MailKind, canonical: str) -> str:
    return f"mail:{kind.value}:{address_digest(canonical)[:48]}"


def _gate_blocks(session: Session, address_id: int) -> bool:
    """The gate's rule for mail every customer gets (service notices) refuses this address."""
    reason = session.scalar(select(blocking_reason(literal(address_id), Purpose.SERVICE_NOTICE)))
    return reason is not None


def _daily_mail_allowed(session: Session, kind: MailKind, canonical: str) -> bool:
    return limits.take(
        session, _mail_key(kind, canonical), limit=MAIL_PER_ADDRESS_PER_DAY, window_seconds=DAY
    )


def _valid_for(seconds: float) -> str:
    hours = round(seconds / 3600)
    if hours >= 48 and hours % 24 == 0:
        return f"{hours // 24} days"
    return f"{hours} hours" if hours != 1 else "1 hour"


def wording(settings: Settings, form: SignupForm) -> dict[str, str]:
    """The consent text the person ticked, as the form showed it."""
    shown: dict[str, str] = {}
    if form.marketing:
        shown["marketing"] = settings.signup_marketing_text
    if form.affiliates:
        shown["affiliates"] = settings.signup_affiliates_text
    return shown


def request_signup(
    session: Session, settings: Settings, signer: TokenSigner, form: SignupForm, hit: Hit
) -> tuple[str, OutgoingMail | None]:
    """Record a pending signup and decide its confirmation mail; returns (outcome, mail).

    Raises :class:`SignupError` for a form to correct. The outcome is for the audit trail
    only: the person sees the same page for every outcome.
    """
    if not (form.marketing or form.affiliates):
        raise SignupError("marketing", "tick at least one box to say what you would like")
    try:
        canonical = canonical_address(form.email)
    except ValueError as exc:
        raise SignupError("email", f"this e-mail address cannot be used: {exc}") from None
    if erased_among(session, signer, [canonical]):
        # Erased at the person's request: it is never added again, whoever asks.
        _audit(session, hit, "blocked", None)
        return "blocked", None
    known = session.scalar(select(Address.id).where(Address.address == canonical))
    if known is not None and (
        staff_only_suppressions(session, known) or _gate_blocks(session, known)
    ):
        _audit(session, hit, "blocked", known)
        return "blocked", None
    if not _daily_mail_allowed(session, MailKind.CONFIRM, canonical):
        _audit(session, hit, "address_limited", known)
        return "address_limited", None
    row = SignupRequest(
        address=canonical,
        submitted_address=form.email.strip(),
        first_name=form.first_name,
        last_name=form.last_name,
        attributes=dict(form.attributes or {}),
        marketing=form.marketing,
        affiliates=form.affiliates,
        form=settings.signup_form,
        policy_version=settings.policy_version,
        wording=wording(settings, form),
        requested_at=utcnow(),
        request_ip=hit.ip,
        request_user_agent=(hit.user_agent or "")[:512] or None,
        message_id=new_message_id(settings, MailKind.CONFIRM),
        link_nonce=secrets.token_hex(16),
        mail_status="queued",
    )
    session.add(row)
    session.flush()
    token = signer.sign_timed(LinkPurpose.SIGNUP_CONFIRM, {"s": row.id, "n": row.link_nonce})
    _audit(session, hit, "mail_queued", known, signup_id=row.id)
    return "mail_queued", OutgoingMail(
        kind=MailKind.CONFIRM,
        to_address=row.submitted_address,
        to_name=form.first_name,
        message_id=row.message_id,
        context={
            "confirm_url": f"{settings.base_url}/subscribe/confirm/{token}",
            "asked": list(row.wording.values()),
            "valid_for": _valid_for(settings.signup_link_seconds),
        },
        limit_key=_mail_key(MailKind.CONFIRM, canonical),
        signup_id=row.id,
    )


def request_preferences_link(
    session: Session, settings: Settings, signer: TokenSigner, email: str, hit: Hit
) -> tuple[str, OutgoingMail | None]:
    """Decide the mail with a contact's preference link; (outcome, mail) as for a signup."""
    try:
        canonical = canonical_address(email)
    except ValueError as exc:
        raise SignupError("email", f"this e-mail address cannot be used: {exc}") from None
    found = session.execute(
        select(Address.id, Contact.submitted_address, Contact.first_name)
        .join(Contact, Contact.address_id == Address.id)
        .where(Address.address == canonical)
    ).first()
    if found is None:
        _audit(session, hit, "not_a_contact", None, route="preferences_link")
        return "not_a_contact", None
    address_id, submitted, first_name = found
    if _gate_blocks(session, address_id):
        _audit(session, hit, "blocked", address_id, route="preferences_link")
        return "blocked", None
    if not _daily_mail_allowed(session, MailKind.PREFERENCES, canonical):
        _audit(session, hit, "address_limited", address_id, route="preferences_link")
        return "address_limited", None
    token = signer.sign_link(LinkPurpose.PREFERENCES, address_id)
    _audit(session, hit, "mail_queued", address_id, route="preferences_link")
    return "mail_queued", OutgoingMail(
        kind=MailKind.PREFERENCES,
        to_address=submitted,
        to_name=first_name,
        message_id=new_message_id(settings, MailKind.PREFERENCES),
        context={"preferences_url": f"{settings.base_url}/preferences/{token}"},
        limit_key=_mail_key(MailKind.PREFERENCES, canonical),
        address_id=address_id,
    )


def deliver(settings: Settings, sessions: sessionmaker[Session], mail: OutgoingMail) -> bool:
    """Send ``mail`` and record how it went; a mail that could not go gives its slot back.

    Runs after the page was answered, so it never raises: a failure is logged (without the
    address) and recorded on the signup row and in the audit trail.
    """
    try:
        send(settings, mail)
        sent = True
    except Exception as exc:  # any failure of rendering or transport: record it, keep going
        # Only the kind of error: a relay's reply may quote the address.
        log.warning("a %s mail could not be sent: %s", mail.kind.value, type(exc).__name__)
        sent = False
    try:
        with session_scope(sessions) as session:
            if mail.signup_id is not None:
                session.execute(
                    update(SignupRequest)
                    .where(SignupRequest.id == mail.signup_id)
                    .values(mail_status="sent" if sent else "failed", mailed_at=utcnow())
                )
            if not sent:
                limits.give_back(session, mail.limit_key, limit=MAIL_PER_ADDRESS_PER_DAY)
            record_event(
                session,
                f"{mail.kind.value}_mail",
                address_id=mail.address_id,
                outcome="sent" if sent else "failed",
                signup_id=mail.signup_id,
                message_id=mail.message_id,
            )
    except Exception:
        log.warning(
            "the outcome of a %s mail could not be recorded", mail.kind.value, exc_info=True
        )
    return sent


def pending_signup(
    session: Session, settings: Settings, signer: TokenSigner, token: str
) -> SignupRequest:
    """The signup a confirmation link names; :class:`BadToken` when it does not verify,
    has expired, or names no signup.

    The link names its row by id *and* the row's random nonce: an id is handed out again
    once the newest row is deleted (SQLite), and the link must not then name the new row,
    someone else's signup. A link without a nonce (mailed before the nonce existed) names
    nothing.
    """
    payload = signer.read_timed(
        LinkPurpose.SIGNUP_CONFIRM, token, max_age_seconds=int(settings.signup_link_seconds)
    )
    signup_id = payload.get("s")
    nonce = payload.get("n")
    if not isinstance(signup_id, int) or isinstance(signup_id, bool):
        raise BadToken(TokenOutcome.MALFORMED)
    if not isinstance(nonce, str):
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    row = session.get(SignupRequest, signup_id)
    if row is None or not hmac.compare_digest(row.link_nonce.encode(), nonce.encode()):
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    return row


def confirm_signup(session: Session, row: SignupRequest, hit: Hit) -> tuple[bool, int]:
    """Record the consent a pending signup asked for, with its proof: (newly confirmed, id).

    Confirming twice records nothing more. Raises :class:`CannotResubscribe`, changing
    nothing, when the address is now suppressed for a reason only staff may lift, and its
    child :class:`OtherMailbox` when a contact with the same matching key is mailed at
    another spelling: the consent and any unsubscribe it would lift are that contact's, and
    whoever followed the link proved only that they read the mailbox the link was sent to.
    """
    if _mailed_elsewhere(session, row):
        raise OtherMailbox(
            "we cannot subscribe this address as written: we already write to it spelled "
            "another way, which may be another mailbox. Nothing was changed; please contact us."
        )
    now = utcnow()
    claimed = session.execute(
        update(SignupRequest)
        .where(SignupRequest.id == row.id, SignupRequest.confirmed_at.is_(None))
        .values(
            confirmed_at=now,
            confirm_ip=hit.ip,
            confirm_user_agent=(hit.user_agent or "")[:512] or None,
        )
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        session.refresh(row)
        assert row.address_id is not None
        return False, row.address_id
    address_id = ensure_address(session, row.address)
    source = f"signup:{row.id}"
    if row.marketing:
        resubscribe(session, address_id, hit=hit, source=source, policy_version=row.policy_version)
    elif staff_only_suppressions(session, address_id):
        raise CannotResubscribe("this address is suppressed; please contact us")
    if row.affiliates:
        record_consent(
            session,
            address_id,
            Scope.AFFILIATES,
            ConsentStatus.OPTED_IN,
            source=source,
            occurred_at=now,
            recipient_action=True,
            hit=hit,
            policy_version=row.policy_version,
        )
    _ensure_contact(session, row, address_id)
    session.execute(
        update(SignupRequest).where(SignupRequest.id == row.id).values(address_id=address_id)
    )
    record_event(
        session,
        "signup_confirmed",
        address_id=address_id,
        hit=hit,
        outcome="confirmed",
        signup_id=row.id,
        form=row.form,
        policy_version=row.policy_version,
        message_id=row.message_id,
        marketing=row.marketing,
        affiliates=row.affiliates,
        requested_at=row.requested_at.isoformat(),
    )
    session.refresh(row)
    return True, address_id


def _mailed_elsewhere(session: Session, row: SignupRequest) -> bool:
    """Whether a contact with ``row``'s matching key is mailed at another address than the
    one the confirmation went to (README, "Addresses": the local part is the server's to
    interpret, so ``Straße@`` and ``strasse@`` may be two people)."""
    held = session.scalar(
        select(Contact.submitted_address)
        .join(Address, Address.id == Contact.address_id)
        .where(Address.address == row.address)
    )
    if held is None:
        return False
    try:
        return delivery_address(held) != delivery_address(row.submitted_address)
    except InvalidAddress:
        return True


def _ensure_contact(session: Session, row: SignupRequest, address_id: int) -> None:
    contact = session.scalar(select(Contact).where(Contact.address_id == address_id))
    if contact is None:
        session.add(
            Contact(
                address_id=address_id,
                submitted_address=row.submitted_address,
                first_name=row.first_name,
                last_name=row.last_name,
                attributes=dict(row.attributes),
                source=f"signup:{row.form}",
                collected_at=row.requested_at,
            )
        )
        return
    # What the person just typed is newer than what we held; empty fields keep the old value.
    if row.first_name:
        contact.first_name = row.first_name
    if row.last_name:
        contact.last_name = row.last_name
    if row.attributes:
        contact.attributes = {**contact.attributes, **row.attributes}


def prune(session: Session, settings: Settings) -> tuple[int, int]:
    """Forget what never became consent: signups whose link expired unconfirmed (an address,
    a name and an IP of someone who did not confirm), and counters whose window has passed.
    Confirmed signups stay: they are the proof of consent. Returns (signups, counters)."""
    cutoff = utcnow() - timedelta(seconds=settings.signup_link_seconds)
    signups = session.execute(
        delete(SignupRequest).where(
            SignupRequest.confirmed_at.is_(None), SignupRequest.requested_at < cutoff
        )
    ).rowcount  # type: ignore[attr-defined]
    counters = limits.prune(session, max(DAY, settings.signup_ip_window_seconds))
    return int(signups or 0), counters


def _audit(
    session: Session,
    hit: Hit,
    action: str,
    address_id: int | None,
    *,
    route: str = "signup",
    **detail: Any,
) -> None:
    record_event(
        session,
        "web_hit",
        address_id=address_id,
        hit=hit,
        outcome="accepted",
        route=route,
        action=action,
        method="POST",
        **detail,
    )
