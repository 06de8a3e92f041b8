from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.models import Campaign, Contact, Delivery, DeliveryStatus
from suppression.consent import consent_history, current_consent
from suppression.events import Hit
from suppression.models import Address, ConsentStatus, Event, Reason, Scope, Suppression, utcnow
from suppression.suppressions import active_suppressions, add_suppression
from suppression.tokens import BadToken, LinkPurpose, TokenSigner
from suppression.unsubscribe import (
    CannotResubscribe,
    Held,
    UnsubscribeResult,
    resolve_link,
    resolve_unsubscribe_link,
    resubscribe,
    unsubscribe_address,
)
from tests.factories import make_contact

SIGNER = TokenSigner(["unit-test-key-0123456789"])
HIT = Hit(ip="127.0.0.1", user_agent="pytest")


def count(session: Session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def queue(session: Session, contact: Contact, purpose: str = "marketing") -> Delivery:
    """A queued delivery of a new sending campaign to ``contact``."""
    campaign = Campaign(
        name=purpose, subject="s", template="new-releases", purpose=purpose, status="sending"
    )
    session.add(campaign)
    session.flush()
    delivery = Delivery(
        campaign_id=campaign.id,
        contact_id=contact.id,
        address_id=contact.address_id,
        status=DeliveryStatus.QUEUED.value,
    )
    session.add(delivery)
    session.flush()
    return delivery


def unsubscribe_link(session: Session, token: str, source: str = "one_click"):
    """What the one-click page does with a link: verify it (and, on PostgreSQL, find a repeat
    held), then the one unsubscribe."""
    subject, address, held = resolve_unsubscribe_link(session, SIGNER, token)
    return unsubscribe_address(
        session,
        address,
        stop_queued=stop_queued,
        hit=HIT,
        source=source,
        campaign_id=subject.campaign_id,
        held=held,
    )


def test_unsubscribe_suppresses_opts_out_stops_queued_mail_and_is_idempotent(
    session: Session,
) -> None:
    ann = make_contact(session, "ann@example.com")
    bob = make_contact(session, "bob@example.com")
    first_news, second_news = queue(session, ann), queue(session, ann)
    notice = queue(session, ann, purpose="service_notice")
    bobs = queue(session, bob)
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, ann.address_id, 3)

    first = unsubscribe_link(session, token)
    second = unsubscribe_link(session, token)

    assert first.newly_suppressed and not second.newly_suppressed
    assert first.masked_address == "a***@e***.com"
    assert (first.stopped, second.stopped) == (2, 0)
    session.expire_all()
    # Her queued marketing is cancelled with the reason; a service notice and Bob's mail are not.
    for delivery in (first_news, second_news):
        assert (delivery.status, delivery.skip_reason) == ("cancelled", "unsubscribe")
        assert delivery.finished_at is not None
    assert notice.status == "queued" and bobs.status == "queued"
    assert [s.reason for s in active_suppressions(session, ann.address_id)] == ["unsubscribe"]
    assert current_consent(session, ann.address_id, Scope.MARKETING).status == "opted_out"
    assert active_suppressions(session, bob.address_id) == []
    events = session.scalars(select(Event).where(Event.kind == "unsubscribed")).all()
    assert [(e.outcome, e.detail["stopped"], e.ip) for e in events] == [
        ("suppressed", 2, "127.0.0.1"),
        ("already_suppressed", 0, "127.0.0.1"),
    ]


def test_the_callers_audit_event_follows_the_unsubscribed_event(session: Session) -> None:
    """``audit``: the caller's own row (a page's hit), told whether the address was newly
    suppressed, written right after ``unsubscribed``; on SQLite a link is never held."""
    contact = make_contact(session, "ann@example.com")
    queue(session, contact)
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id, 3)
    told: list[bool] = []

    def audit(created: bool) -> dict[str, object]:
        told.append(created)
        return {"kind": "web_hit", "address_id": contact.address_id, "hit": HIT, "n": len(told)}

    for _ in range(2):
        subject, address, held = resolve_unsubscribe_link(session, SIGNER, token)
        if session.get_bind().dialect.name == "sqlite":
            assert held is None
        unsubscribe_address(
            session, address, stop_queued=stop_queued, hit=HIT, source="t", held=held, audit=audit
        )
    assert told == [True, False]
    events = session.scalars(
        select(Event).where(Event.kind.in_(["unsubscribed", "web_hit"])).order_by(Event.id)
    ).all()
    assert [(e.kind, e.outcome, e.detail.get("stopped"), e.detail.get("n")) for e in events] == [
        ("unsubscribed", "suppressed", 1, None),
        ("web_hit", None, None, 1),
        ("unsubscribed", "already_suppressed", 0, None),
        ("web_hit", None, None, 2),
    ]


def test_tampered_token_changes_nothing(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    delivery = queue(session, contact)
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
    before = (count(session, Suppression), count(session, Event))
    with pytest.raises(BadToken):
        unsubscribe_link(session, token[:-2] + "zz")
    assert (count(session, Suppression), count(session, Event)) == before
    session.expire_all()
    assert delivery.status == "queued"


def test_token_for_an_unknown_address_is_refused_like_a_forged_one(session: Session) -> None:
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, 999_999)
    with pytest.raises(BadToken) as caught:
        unsubscribe_link(session, token)
    assert str(caught.value) == "this link is not valid"


def test_resubscribe_lifts_only_the_recipients_own_unsubscribe(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
    unsubscribe_link(session, token)
    resubscribe(session, contact.address_id, hit=HIT, source="preferences")
    assert active_suppressions(session, contact.address_id) == []
    assert current_consent(session, contact.address_id, Scope.MARKETING).status == "opted_in"


@pytest.mark.parametrize("scope", ["affiliates", "affiliate:7"])
def test_resubscribing_to_marketing_leaves_an_unsubscribe_from_sharing(
    session: Session, scope: str
) -> None:
    """Staff record "do not share me" as an unsubscribe for the affiliates (or for one);
    the person re-subscribing to marketing lifts their marketing unsubscribe only, and is
    still not shared (found by the red-team pass: every scope was lifted)."""
    contact = make_contact(session, "ann@example.com", affiliates=ConsentStatus.OPTED_IN)
    add_suppression(session, contact.address_id, scope=scope, reason=Reason.UNSUBSCRIBE, source="t")
    unsubscribe_link(session, SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id))
    resubscribe(session, contact.address_id, hit=HIT, source="preferences")
    assert [s.scope for s in active_suppressions(session, contact.address_id)] == [scope]
    assert current_consent(session, contact.address_id, Scope.MARKETING).status == "opted_in"


@pytest.mark.parametrize(
    "reason",
    [Reason.HARD_BOUNCE, Reason.COMPLAINT, Reason.POSTAL_REQUEST, Reason.LEGAL, Reason.MANUAL],
)
def test_staff_suppressions_block_resubscribe_and_nothing_changes(
    session: Session, reason: Reason
) -> None:
    contact = make_contact(session, "ann@example.com", marketing=ConsentStatus.OPTED_OUT)
    add_suppression(session, contact.address_id, scope="global", reason=reason, source="t")
    add_suppression(
        session, contact.address_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="t"
    )
    with pytest.raises(CannotResubscribe) as caught:
        resubscribe(session, contact.address_id, hit=HIT, source="preferences")
    assert str(caught.value) == (
        "this address cannot be re-subscribed here because it was suppressed for: "
        f"{reason.value.replace('_', ' ')}. Please contact us to change this."
    )
    assert len(active_suppressions(session, contact.address_id)) == 2
    assert current_consent(session, contact.address_id, Scope.MARKETING).status == "opted_out"


def test_every_record_of_an_unsubscribe_says_who_asked_how_and_from_which_campaign(
    session: Session,
) -> None:
    ann = make_contact(session, "ann@example.com")
    queue(session, ann)
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, ann.address_id, 7)
    before = utcnow()
    result = unsubscribe_link(session, token, source="unsubscribe_page")
    assert (result.address_id, result.campaign_id, result.stopped) == (ann.address_id, 7, 1)
    suppression = session.get(Suppression, result.suppression_id)
    assert suppression is not None
    assert (suppression.address_id, suppression.scope, suppression.reason) == (
        ann.address_id,
        "marketing",
        "unsubscribe",
    )
    assert (suppression.source, suppression.note, suppression.created_by) == (
        "unsubscribe_page",
        "campaign 7",
        None,
    )
    opt_out = consent_history(session, ann.address_id)[-1]
    assert (opt_out.scope, opt_out.status, opt_out.source, opt_out.ip) == (
        "marketing",
        "opted_out",
        "unsubscribe_page",
        "127.0.0.1",
    )
    assert opt_out.occurred_at >= before
    event = session.scalars(select(Event).where(Event.kind == "unsubscribed")).one()
    assert (event.address_id, event.outcome, event.ip, event.user_agent) == (
        ann.address_id,
        "suppressed",
        "127.0.0.1",
        "pytest",
    )
    assert event.detail == {"campaign_id": 7, "stopped": 1, "source": "unsubscribe_page"}
    added = session.scalars(select(Event).where(Event.kind == "suppression_added")).one()
    assert (added.address_id, added.ip, added.user_agent) == (ann.address_id, "127.0.0.1", "pytest")


def test_staff_passing_on_an_unsubscribe_are_named_with_their_note(session: Session) -> None:
    ann = make_contact(session, "ann@example.com")
    address = session.get(Address, ann.address_id)
    result = unsubscribe_address(
        session, address, stop_queued=stop_queued, source="staff", actor="rita", note="letter 12"
    )
    suppression = session.get(Suppression, result.suppression_id)
    assert (suppression.source, suppression.note, suppression.created_by) == (
        "staff",
        "letter 12",
        "rita",
    )
    event = session.scalars(select(Event).where(Event.kind == "unsubscribed")).one()
    assert (event.actor, event.ip, event.detail["campaign_id"]) == ("rita", None, None)
    assert result.campaign_id is None and result.masked_address == "a***@e***.com"


def test_two_staff_suppressions_are_both_named_when_resubscribe_is_refused(
    session: Session,
) -> None:
    contact = make_contact(session, "ann@example.com")
    for reason in (Reason.MANUAL, Reason.HARD_BOUNCE):
        add_suppression(session, contact.address_id, scope="global", reason=reason, source="t")
    with pytest.raises(CannotResubscribe, match=r"suppressed for: hard bounce, manual\. Please"):
        resubscribe(session, contact.address_id, hit=HIT, source="preferences")


def test_a_resubscribe_records_who_asked_from_where_under_which_policy(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    unsubscribe_link(session, SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id))
    resubscribe(session, contact.address_id, hit=HIT, source="signup_form", policy_version="v7")
    lifted = session.scalars(
        select(Suppression).where(Suppression.address_id == contact.address_id)
    ).one()
    assert (lifted.lifted_by, lifted.lift_reason) == ("recipient", "re-subscribed by the recipient")
    event = session.scalars(select(Event).where(Event.kind == "suppression_lifted")).one()
    assert (event.address_id, event.actor, event.ip) == (
        contact.address_id,
        "recipient",
        "127.0.0.1",
    )
    opt_in = consent_history(session, contact.address_id)[-1]
    assert (opt_in.status, opt_in.source, opt_in.ip, opt_in.policy_version) == (
        "opted_in",
        "signup_form",
        "127.0.0.1",
        "v7",
    )


def test_a_link_resolves_to_the_whole_address_row(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    row = session.get(Address, contact.address_id)
    assert row is not None
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id, 3)
    subject, address = resolve_link(session, SIGNER, LinkPurpose.UNSUBSCRIBE, token)
    assert (subject.address_id, subject.campaign_id) == (contact.address_id, 3)
    assert (address.id, address.address, address.created_at) == (
        row.id,
        row.address,
        row.created_at,
    )


def test_a_held_repeat_writes_only_the_stop_and_the_events(session: Session) -> None:
    """Given a :class:`Held` of this address and transaction (on PostgreSQL from
    :func:`resolve_unsubscribe_link`; built by hand here, as SQLite never holds), the repeat
    trusts it: no suppression or opt-out written again, mail queued since the first time
    stopped, the events say who asked, how and from which campaign."""
    ann = make_contact(session, "ann@example.com")
    address = session.get(Address, ann.address_id)
    first = unsubscribe_address(session, address, stop_queued=stop_queued, source="one_click")
    since = queue(session, ann)
    notice = queue(session, ann, purpose="service_notice")
    before = (count(session, Suppression), len(consent_history(session, ann.address_id)))
    last_event = session.scalar(select(func.max(Event.id)))
    told: list[bool] = []

    def audit(created: bool) -> dict[str, object]:
        told.append(created)
        return {"kind": "web_hit", "address_id": ann.address_id, "hit": HIT, "page": "one-click"}

    held = Held(ann.address_id, first.suppression_id, session.get_transaction())
    result = unsubscribe_address(
        session,
        address,
        stop_queued=stop_queued,
        source="unsubscribe_page",
        hit=HIT,
        campaign_id=9,
        actor="rita",
        note="never written",
        held=held,
        audit=audit,
    )

    assert result == UnsubscribeResult(
        address_id=ann.address_id,
        masked_address="a***@e***.com",
        campaign_id=9,
        newly_suppressed=False,
        stopped=1,
        suppression_id=first.suppression_id,
    )
    assert told == [False]
    session.expire_all()
    assert (since.status, since.skip_reason) == ("cancelled", "unsubscribe")
    assert notice.status == "queued"
    assert (count(session, Suppression), len(consent_history(session, ann.address_id))) == before
    events = session.scalars(select(Event).where(Event.id > last_event).order_by(Event.id)).all()
    assert [
        (e.kind, e.address_id, e.actor, e.ip, e.user_agent, e.outcome, e.detail) for e in events
    ] == [
        (
            "unsubscribed",
            ann.address_id,
            "rita",
            "127.0.0.1",
            "pytest",
            "already_suppressed",
            {"campaign_id": 9, "stopped": 1, "source": "unsubscribe_page"},
        ),
        ("web_hit", ann.address_id, None, "127.0.0.1", "pytest", None, {"page": "one-click"}),
    ]


def test_a_held_of_another_address_or_an_ended_transaction_is_not_trusted(
    session: Session,
) -> None:
    """The held rows are locked only in their transaction and only for their address:
    otherwise the unsubscribe is written in full."""
    ann = make_contact(session, "ann@example.com")
    bob = make_contact(session, "bob@example.com")
    carl = make_contact(session, "carl@example.com")
    anns = unsubscribe_address(
        session, session.get(Address, ann.address_id), stop_queued=stop_queued, source="t"
    )
    not_bobs = Held(ann.address_id, anns.suppression_id, session.get_transaction())
    result = unsubscribe_address(
        session,
        session.get(Address, bob.address_id),
        stop_queued=stop_queued,
        source="t",
        held=not_bobs,
    )
    assert result.newly_suppressed and result.suppression_id != anns.suppression_id
    assert [s.reason for s in active_suppressions(session, bob.address_id)] == ["unsubscribe"]
    assert current_consent(session, bob.address_id, Scope.MARKETING).status == "opted_out"

    ended = Held(carl.address_id, anns.suppression_id, session.get_transaction())
    session.commit()
    result = unsubscribe_address(
        session,
        session.get(Address, carl.address_id),
        stop_queued=stop_queued,
        source="t",
        held=ended,
    )
    assert result.newly_suppressed and result.suppression_id != anns.suppression_id
    assert [s.reason for s in active_suppressions(session, carl.address_id)] == ["unsubscribe"]
    assert current_consent(session, carl.address_id, Scope.MARKETING).status == "opted_out"
