"""The address as the person gave it is the address mailed to; the matching key decides
who may be mailed. (Issue 17: the case-folded key used to be the envelope recipient.)"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.services import create_campaign, schedule_campaign
from dispatcher.contacts.importer import import_contacts
from dispatcher.db import session_scope
from dispatcher.models import Contact, Delivery
from dispatcher.sending.batch import send_batch
from dispatcher.settings import Settings
from suppression.models import Reason
from suppression.registry import ensure_address
from suppression.suppressions import add_suppression
from suppression.tokens import TokenSigner
from tests.conftest import settings_for
from tests.support.smtp_sink import SmtpSink

GIVEN = "Jörg.Straße@Example.COM"
MAILED = "Jörg.Straße@example.com"


def _import(sessions: sessionmaker[Session], tmp_path: Path, *emails: str) -> None:
    csv = tmp_path / "contacts.csv"
    lines = ["email,first_name,marketing_consent,consent_at"]
    lines += [f"{e},Jörg,yes,2025-01-01" for e in emails]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = import_contacts(sessions, csv, source="test")
    assert report.created == len(emails), report.errors


def _send(settings: Settings, sessions: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    """Create, schedule and send one campaign; (status, skip_reason) per delivery."""
    with session_scope(sessions) as session:
        campaign = create_campaign(
            session, settings, name="News", subject="New tracks", template="new-releases"
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    signer = TokenSigner(settings.secret_keys)
    for first, last in fan_out(sessions, campaign_id, 100):
        send_batch(settings, sessions, signer, campaign_id, first, last)
    with session_scope(sessions) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.skip_reason, Delivery.error).order_by(Delivery.id)
        ).all()
    return [(status, reason) for status, reason, _ in rows]


def test_mail_goes_to_the_address_as_given_not_to_its_key(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(settings.home, mail_url=smtp_sink.url)
    _import(session_factory, tmp_path, GIVEN, "ann@example.com")
    assert _send(settings, session_factory) == [("sent", None), ("sent", None)]
    received = {r.exact_recipients[0]: r for r in smtp_sink.wait_for_count(2)}
    assert set(received) == {MAILED, "ann@example.com"}
    joerg = received[MAILED]
    assert "SMTPUTF8" in joerg.mail_options
    # RFC 6532: the header carries the address as raw UTF-8.
    headers = email.message_from_string(joerg.data.decode("utf-8"), policy=email.policy.default)
    assert headers["To"].addresses[0].addr_spec == MAILED
    assert "SMTPUTF8" not in received["ann@example.com"].mail_options


def test_a_suppression_of_the_key_still_blocks_the_address_as_given(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(settings.home, mail_url=smtp_sink.url)
    _import(session_factory, tmp_path, GIVEN)
    with session_scope(session_factory) as session:
        # Typed by staff in another case and spelling: the same key.
        address_id = ensure_address(session, "JÖRG.STRASSE@example.com")
        add_suppression(
            session, address_id, scope="global", reason=Reason.POSTAL_REQUEST, source="test"
        )
    assert _send(settings, session_factory) == [("suppressed", "postal_request")]
    assert smtp_sink.received() == []


def test_a_relay_without_smtputf8_fails_the_row_with_the_reason_and_sends_the_rest(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp_sink.smtputf8 = False
    settings = settings_for(settings.home, mail_url=smtp_sink.url)
    _import(session_factory, tmp_path, GIVEN, "ann@example.com")
    # Whatever order the import gave the contacts: one failed with the reason, one sent.
    assert sorted(_send(settings, session_factory), key=str) == [
        ("failed", "needs_smtputf8"),
        ("sent", None),
    ]
    with session_scope(session_factory) as session:
        error = session.scalar(select(Delivery.error).where(Delivery.status == "failed"))
    assert error is not None and "SMTPUTF8" in error
    assert [r.exact_recipients for r in smtp_sink.wait_for_count(1)] == [("ann@example.com",)]


def test_a_submitted_address_that_is_not_the_checked_key_is_never_mailed(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(settings.home, mail_url=smtp_sink.url)
    _import(session_factory, tmp_path, "ann@example.com", "carol@example.com", "dave@example.com")
    with session_scope(session_factory) as session:
        # A writer that broke the pairing (the gate checked ann's key, not bob's).
        session.execute(
            update(Contact)
            .where(Contact.submitted_address == "ann@example.com")
            .values(submitted_address="bob@example.com")
        )
    outcomes = _send(settings, session_factory)
    assert outcomes[0] == ("failed", "address_mismatch")  # the first of the batch …
    assert outcomes[1:] == [("sent", None), ("sent", None)]  # … and the rest still go
    with session_scope(session_factory) as session:
        error = session.scalar(select(Delivery.error).where(Delivery.status == "failed"))
    assert error == ("not sent: the contact's submitted address does not match the address checked")
    assert sorted(r.exact_recipients[0] for r in smtp_sink.wait_for_count(2)) == [
        "carol@example.com",
        "dave@example.com",
    ]


def test_a_contact_moved_to_another_key_is_not_mailed_at_its_new_address(
    settings: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """The address checked is the delivery's key, not the contact's current one: a contact
    moved to bob's key after its delivery was queued for ann's is not mailed at bob's."""
    settings = settings_for(settings.home, mail_url=smtp_sink.url)
    _import(session_factory, tmp_path, "ann@example.com", "carol@example.com", "dave@example.com")
    with session_scope(session_factory) as session:
        campaign = create_campaign(
            session, settings, name="News", subject="New tracks", template="new-releases"
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    [(first, last)] = fan_out(session_factory, campaign_id, 100)
    with session_scope(session_factory) as session:
        bob = ensure_address(session, "bob@example.com")
        session.execute(
            update(Contact)
            .where(Contact.submitted_address == "ann@example.com")
            .values(address_id=bob, submitted_address="bob@example.com")
        )
    signer = TokenSigner(settings.secret_keys)
    send_batch(settings, session_factory, signer, campaign_id, first, last)
    with session_scope(session_factory) as session:
        outcomes = session.execute(
            select(Delivery.status, Delivery.skip_reason).order_by(Delivery.id)
        ).all()
    assert [tuple(o) for o in outcomes] == [
        ("failed", "address_mismatch"),
        ("sent", None),
        ("sent", None),
    ]
    assert sorted(r.exact_recipients[0] for r in smtp_sink.wait_for_count(2)) == [
        "carol@example.com",
        "dave@example.com",
    ]
