from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.models import Contact
from suppression.gate import NOT_ASKED, OPTED_OUT, Purpose, affiliate_shareable, blocking_reason
from suppression.models import ConsentStatus, Reason
from suppression.suppressions import lift_suppressions
from tests.factories import make_contact


def reason_for(session: Session, contact: Contact, purpose: Purpose) -> str | None:
    stmt = select(blocking_reason(Contact.address_id, purpose)).where(Contact.id == contact.id)
    return session.execute(stmt).scalar_one()


def test_opted_in_unsuppressed_contact_passes_marketing(session: Session) -> None:
    contact = make_contact(session, "ok@example.com")
    assert reason_for(session, contact, Purpose.MARKETING) is None


def test_marketing_needs_opt_in(session: Session) -> None:
    never = make_contact(session, "never@example.com", marketing=None)
    out = make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
    assert reason_for(session, never, Purpose.MARKETING) == NOT_ASKED
    assert reason_for(session, out, Purpose.MARKETING) == OPTED_OUT


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("scope", ["global", "marketing"])
def test_every_suppression_blocks_marketing(session: Session, reason: Reason, scope: str) -> None:
    contact = make_contact(session, "s@example.com", suppressed=reason, suppression_scope=scope)
    assert reason_for(session, contact, Purpose.MARKETING) == reason.value


def test_affiliates_scope_does_not_block_marketing(session: Session) -> None:
    contact = make_contact(
        session, "a@example.com", suppressed=Reason.MANUAL, suppression_scope="affiliates"
    )
    assert reason_for(session, contact, Purpose.MARKETING) is None


def test_lifted_suppression_no_longer_blocks(session: Session) -> None:
    contact = make_contact(session, "l@example.com", suppressed=Reason.HARD_BOUNCE)
    lift_suppressions(session, contact.address_id, why="mailbox fixed", actor="staff")
    assert reason_for(session, contact, Purpose.MARKETING) is None


@pytest.mark.parametrize(
    ("reason", "blocks"),
    [
        (Reason.UNSUBSCRIBE, False),
        (Reason.HARD_BOUNCE, True),
        (Reason.REPEATED_SOFT_BOUNCE, True),
        (Reason.COMPLAINT, True),
        (Reason.POSTAL_REQUEST, True),
        (Reason.LEGAL, True),
        (Reason.MANUAL, False),
    ],
)
def test_service_notice_ignores_consent_and_unsubscribe_only(
    session: Session, reason: Reason, blocks: bool
) -> None:
    contact = make_contact(
        session, "n@example.com", marketing=ConsentStatus.OPTED_OUT, suppressed=reason
    )
    expected = reason.value if blocks else None
    assert reason_for(session, contact, Purpose.SERVICE_NOTICE) == expected


def test_global_manual_suppression_blocks_service_notice(session: Session) -> None:
    contact = make_contact(
        session, "m@example.com", suppressed=Reason.MANUAL, suppression_scope="global"
    )
    assert reason_for(session, contact, Purpose.SERVICE_NOTICE) == "manual"


def shareable_with(session: Session, contact: Contact, affiliate_id: int) -> bool:
    stmt = select(affiliate_shareable(Contact.address_id, affiliate_id)).where(
        Contact.id == contact.id
    )
    return bool(session.execute(stmt).scalar_one())


def test_an_affiliate_s_own_suppression_blocks_that_affiliate_only(session: Session) -> None:
    both = {"marketing": ConsentStatus.OPTED_IN, "affiliates": ConsentStatus.OPTED_IN}
    contact = make_contact(
        session, "a@example.com", suppressed=Reason.MANUAL, suppression_scope="affiliate:2", **both
    )
    assert shareable_with(session, contact, 1)
    assert not shareable_with(session, contact, 2)


@pytest.mark.parametrize("scope", ["global", "marketing", "affiliates"])
def test_a_wider_suppression_blocks_every_affiliate(session: Session, scope: str) -> None:
    contact = make_contact(
        session,
        "a@example.com",
        affiliates=ConsentStatus.OPTED_IN,
        suppressed=Reason.MANUAL,
        suppression_scope=scope,
    )
    assert not shareable_with(session, contact, 1)


def test_sharing_needs_both_opt_ins(session: Session) -> None:
    only_marketing = make_contact(session, "m@example.com")
    both = make_contact(session, "b@example.com", affiliates=ConsentStatus.OPTED_IN)
    only_affiliates = make_contact(
        session, "o@example.com", marketing=None, affiliates=ConsentStatus.OPTED_IN
    )
    assert [shareable_with(session, c, 1) for c in (only_marketing, both, only_affiliates)] == [
        False,
        True,
        False,
    ]


def test_a_global_unsubscribe_does_not_block_service_notices(session: Session) -> None:
    """Only staff's own global suppression (manual) joins the reasons that always block: an
    unsubscribe, whatever its scope, is about marketing."""
    contact = make_contact(
        session, "u@example.com", suppressed=Reason.UNSUBSCRIBE, suppression_scope="global"
    )
    assert reason_for(session, contact, Purpose.SERVICE_NOTICE) is None
    assert reason_for(session, contact, Purpose.MARKETING) == "unsubscribe"


def test_an_unknown_purpose_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="^unknown purpose 'newsletter'$"):
        blocking_reason(Contact.address_id, "newsletter")  # type: ignore[arg-type]
