"""Signup and preferences-link decisions against a real (SQLite) database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.suppress import suppress_address
from dispatcher.db import session_scope
from dispatcher.models import Contact, SignupRequest
from dispatcher.privacy.erasure import erase_person
from dispatcher.settings import Settings
from dispatcher.signup.mail import MailKind
from dispatcher.signup.services import (
    OtherMailbox,
    SignupError,
    SignupForm,
    confirm_signup,
    pending_signup,
    prune,
    request_preferences_link,
    request_signup,
)
from suppression.consent import consent_history, current_consent
from suppression.events import Hit
from suppression.models import Consent, ConsentStatus, Reason, Scope, utcnow
from suppression.registry import find_address
from suppression.suppressions import active_suppressions
from suppression.tokens import BadToken, LinkPurpose, TokenOutcome, TokenSigner
from suppression.unsubscribe import CannotResubscribe
from tests.factories import make_contact
from tests.support.clock import signed_ago
from tests.unit.dispatcher.contacts.test_contacts import states

ASKER = Hit(ip="203.0.113.7", user_agent="Firefox/128")
CONFIRMER = Hit(ip="198.51.100.9", user_agent="Chromium/130")


def signup(session: Session, settings: Settings, email: str, **kw: object):
    choices = {"marketing": kw.pop("marketing", True), "affiliates": kw.pop("affiliates", False)}
    form = SignupForm(email=email, **choices, **kw)  # type: ignore[arg-type]
    return request_signup(session, settings, TokenSigner(settings.secret_keys), form, ASKER)


def token_of(mail) -> str:
    return mail.context["confirm_url"].rsplit("/", 1)[1]


def test_a_signup_is_no_consent_until_confirmed_then_consent_with_proof(
    session: Session, settings: Settings
) -> None:
    outcome, mail = signup(
        session, settings, " New.Person@Example.COM ", affiliates=True, first_name="Nia"
    )
    assert outcome == "mail_queued" and mail is not None
    assert mail.kind is MailKind.CONFIRM and mail.to_address == "New.Person@Example.COM"
    assert find_address(session, "new.person@example.com") is None
    assert session.scalar(select(func.count()).select_from(Consent)) == 0

    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(mail))
    newly, address_id = confirm_signup(session, row, CONFIRMER)
    assert newly
    for scope in Scope:
        state = current_consent(session, address_id, scope)
        assert state is not None and state.status == ConsentStatus.OPTED_IN
    ledger = consent_history(session, address_id)
    assert {(c.source, c.ip, c.policy_version) for c in ledger} == {
        (f"signup:{row.id}", CONFIRMER.ip, settings.policy_version)
    }
    # The rest of the proof: when and from where it was asked and confirmed, the browser,
    # the form and its wording, and the confirmation mail's Message-ID.
    assert (row.request_ip, row.request_user_agent) == (ASKER.ip, ASKER.user_agent)
    assert (row.confirm_ip, row.confirm_user_agent) == (CONFIRMER.ip, CONFIRMER.user_agent)
    assert row.confirmed_at is not None and row.requested_at <= row.confirmed_at
    assert row.form == settings.signup_form and row.message_id == mail.message_id
    assert row.wording == {
        "marketing": settings.signup_marketing_text,
        "affiliates": settings.signup_affiliates_text,
    }
    contact = session.scalar(select(Contact).where(Contact.address_id == address_id))
    assert contact is not None and contact.first_name == "Nia"
    assert contact.submitted_address == "New.Person@Example.COM"

    # Confirming again records nothing more.
    before = len(consent_history(session, address_id))
    assert confirm_signup(session, row, CONFIRMER) == (False, address_id)
    assert len(consent_history(session, address_id)) == before


def test_marketing_and_affiliates_are_separate_choices(
    session: Session, settings: Settings
) -> None:
    _, mail = signup(session, settings, "aff@example.com", marketing=False, affiliates=True)
    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(mail))
    _, address_id = confirm_signup(session, row, CONFIRMER)
    assert current_consent(session, address_id, Scope.MARKETING) is None
    affiliates = current_consent(session, address_id, Scope.AFFILIATES)
    assert affiliates is not None and affiliates.status == ConsentStatus.OPTED_IN
    with pytest.raises(SignupError) as refused:
        signup(session, settings, "none@example.com", marketing=False)
    assert refused.value.field == "marketing"


@pytest.mark.parametrize(
    "reason", [Reason.HARD_BOUNCE, Reason.COMPLAINT, Reason.POSTAL_REQUEST, Reason.LEGAL]
)
def test_an_address_suppressed_by_staff_or_mail_system_gets_no_mail(
    session: Session, settings: Settings, reason: Reason
) -> None:
    make_contact(session, "gone@example.com", suppressed=reason, suppression_scope="global")
    assert signup(session, settings, "GONE@example.com") == ("blocked", None)
    assert session.scalar(select(func.count()).select_from(SignupRequest)) == 0


def test_one_confirmation_mail_per_address_per_day(session: Session, settings: Settings) -> None:
    outcomes = [signup(session, settings, addr)[0] for addr in ["a@example.com", "A@Example.com"]]
    assert outcomes == ["mail_queued", "address_limited"]
    assert signup(session, settings, "b@example.com")[0] == "mail_queued"


def test_an_unsubscribed_address_is_resubscribed_only_by_confirming(
    session: Session, settings: Settings
) -> None:
    address_id = make_contact(session, "back@example.com", suppressed=Reason.UNSUBSCRIBE).address_id
    _, mail = signup(session, settings, "back@example.com")
    assert [s.reason for s in active_suppressions(session, address_id)] == ["unsubscribe"]
    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(mail))
    confirm_signup(session, row, CONFIRMER)
    assert active_suppressions(session, address_id) == []
    state = current_consent(session, address_id, Scope.MARKETING)
    assert state is not None and state.status == ConsentStatus.OPTED_IN


def test_confirming_after_a_staff_suppression_changes_nothing(
    session: Session, settings: Settings
) -> None:
    _, mail = signup(session, settings, "late@example.com")
    make_contact(session, "late@example.com", marketing=None, suppressed=Reason.POSTAL_REQUEST)
    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(mail))
    with pytest.raises(CannotResubscribe), session.begin_nested():
        confirm_signup(session, row, CONFIRMER)
    session.refresh(row)
    assert row.confirmed_at is None
    assert session.scalar(select(func.count()).select_from(Consent)) == 0


def test_confirmation_links_expire_and_cannot_be_forged(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mail = signup(session, settings, "x@example.com")
    token = token_of(mail)
    signer = TokenSigner(settings.secret_keys)
    row = pending_signup(session, settings, signer, token)
    old = signed_ago(
        monkeypatch,
        signer,
        LinkPurpose.SIGNUP_CONFIRM,
        {"s": row.id},
        settings.signup_link_seconds + 60,
    )
    with pytest.raises(BadToken) as expired:
        pending_signup(session, settings, signer, old)
    assert expired.value.outcome == "expired"
    foreign = TokenSigner(["someone-elses-key-123456"]).sign_timed(
        LinkPurpose.SIGNUP_CONFIRM, {"s": 1}
    )
    other_purpose = signer.sign_timed(LinkPurpose.FORM, {"s": 1})
    for bad in (foreign, other_purpose, token[:-3] + "AAA", "garbage"):
        with pytest.raises(BadToken):
            pending_signup(session, settings, signer, bad)


def test_preferences_link_goes_only_to_contacts_once_a_day(
    session: Session, settings: Settings
) -> None:
    signer = TokenSigner(settings.secret_keys)
    address_id = make_contact(session, "Ann@Example.com", marketing=None).address_id
    make_contact(
        session, "bounced@example.com", suppressed=Reason.HARD_BOUNCE, suppression_scope="global"
    )

    def ask(email: str):
        return request_preferences_link(session, settings, signer, email, ASKER)

    outcome, mail = ask("ann@example.com")
    assert outcome == "mail_queued" and mail is not None
    assert mail.to_address == "Ann@Example.com" and mail.kind is MailKind.PREFERENCES
    url = mail.context["preferences_url"]
    assert url.startswith(f"{settings.base_url}/preferences/")
    assert signer.read_link(LinkPurpose.PREFERENCES, url.rsplit("/", 1)[1]).address_id == address_id
    assert ask("ann@example.com") == ("address_limited", None)
    assert ask("stranger@example.com") == ("not_a_contact", None)
    assert ask("bounced@example.com") == ("blocked", None)


def test_prune_forgets_expired_unconfirmed_signups_and_keeps_proof(
    session: Session, settings: Settings
) -> None:
    _, kept = signup(session, settings, "kept@example.com")
    signup(session, settings, "forgotten@example.com")
    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(kept))
    confirm_signup(session, row, CONFIRMER)
    assert prune(session, settings) == (0, 0)  # nothing has expired yet
    # A day past the link's lifetime, the unconfirmed one is forgotten.
    session.execute(
        update(SignupRequest).values(
            requested_at=utcnow() - timedelta(seconds=settings.signup_link_seconds + 86_400)
        )
    )
    assert prune(session, settings)[0] == 1
    left = session.scalars(select(SignupRequest.address)).all()
    assert left == ["kept@example.com"]


def test_a_confirmation_link_confirms_only_the_signup_it_was_mailed_for(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Red team (h/redteam-input). SQLite hands the id of a deleted newest row to the next
    one, and erasure deletes a person's signups: Mallory's old link, naming only an id, would
    confirm the victim's signup made after her erasure. The link carries the row's nonce."""
    signer = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        _, mail = request_signup(
            session, settings, signer, SignupForm("mallory@example.net", True, False), ASKER
        )
        assert mail is not None
        mallorys_token = token_of(mail)
    with session_scope(session_factory) as session:  # Mallory asks to be erased
        erase_person(session, signer, "mallory@example.net", reason="request", actor="dpo")
    with session_scope(session_factory) as session:  # Mallory types the victim's address
        request_signup(
            session, settings, signer, SignupForm("victim@example.org", True, False), ASKER
        )
    with session_scope(session_factory) as session, pytest.raises(BadToken) as refused:
        pending_signup(session, settings, signer, mallorys_token)
    assert refused.value.outcome is TokenOutcome.UNKNOWN_SUBJECT


def test_a_link_without_the_rows_nonce_names_no_signup(
    session: Session, settings: Settings
) -> None:
    """A link signed before links carried a nonce (or with another row's) names nothing."""
    signer = TokenSigner(settings.secret_keys)
    _, mail = signup(session, settings, "ann@example.com")
    row = pending_signup(session, settings, signer, token_of(mail))
    for payload in ({"s": row.id}, {"s": row.id, "n": "0" * 32}, {"s": row.id, "n": 7}):
        token = signer.sign_timed(LinkPurpose.SIGNUP_CONFIRM, payload)
        with pytest.raises(BadToken) as refused:
            pending_signup(session, settings, signer, token)
        assert refused.value.outcome is TokenOutcome.UNKNOWN_SUBJECT


def test_a_confirmation_mailed_to_another_mailbox_does_not_re_subscribe_the_contact(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Red team (h/redteam-input). ``Straße@`` and ``strasse@`` share a matching key but may
    be two mailboxes (README, "Addresses"): confirming the mail sent to ``Straße@`` proves
    nothing about ``strasse@``, so it neither lifts that contact's unsubscribe nor opts them
    in; the confirmation is refused, changing nothing, and its page says so."""
    signer = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        make_contact(session, "strasse@example.org")
        suppress_address(session, "strasse@example.org", reason="unsubscribe")
    with session_scope(session_factory) as session:
        _, mail = request_signup(
            session, settings, signer, SignupForm("Straße@example.org", True, True), ASKER
        )
        assert mail is not None and mail.to_address == "Straße@example.org"
        token = token_of(mail)
    with session_scope(session_factory) as session, pytest.raises(OtherMailbox):
        confirm_signup(session, pending_signup(session, settings, signer, token), CONFIRMER)
    assert states(session_factory)[("strasse@example.org", "marketing")] == "opted_out"
    assert ("strasse@example.org", "affiliates") not in states(session_factory)
    with session_scope(session_factory) as session:
        row = pending_signup(session, settings, signer, token)
        assert row.confirmed_at is None  # left to expire and be pruned: it is no proof
        contact = session.scalar(select(Contact))
        assert contact is not None and contact.submitted_address == "strasse@example.org"


def test_a_confirmation_from_the_contacts_own_mailbox_still_re_subscribes(
    session: Session, settings: Settings
) -> None:
    """The same spelling (domain case aside) is the same mailbox: the usual re-subscribe."""
    make_contact(session, "Jörg.Straße@example.org")
    suppress_address(session, "jörg.strasse@example.org", reason="unsubscribe")
    _, mail = signup(session, settings, "Jörg.Straße@EXAMPLE.org")
    row = pending_signup(session, settings, TokenSigner(settings.secret_keys), token_of(mail))
    newly, address_id = confirm_signup(session, row, CONFIRMER)
    assert newly and not active_suppressions(session, address_id)
