from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suppression.consent import current_consent
from suppression.events import Hit
from suppression.models import ConsentStatus, Event, Reason, Scope, Suppression
from suppression.suppressions import active_suppressions, add_suppression
from suppression.tokens import BadToken, LinkPurpose, TokenSigner
from suppression.unsubscribe import CannotResubscribe, apply_unsubscribe, resubscribe
from tests.factories import make_contact

SIGNER = TokenSigner(["unit-test-key-0123456789"])
HIT = Hit(ip="127.0.0.1", user_agent="pytest")


def stopped_none(session: Session, address_id: int) -> int:
    return 0


def count(session: Session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_unsubscribe_suppresses_opts_out_and_is_idempotent(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id, 3)
    stops: list[int] = []

    def stop(session: Session, address_id: int) -> int:
        stops.append(address_id)
        return 2

    first = apply_unsubscribe(session, SIGNER, token, stop_queued=stop, hit=HIT)
    second = apply_unsubscribe(session, SIGNER, token, stop_queued=stop, hit=HIT)

    assert first.newly_suppressed and not second.newly_suppressed
    assert first.masked_address == "a***@e***.com" and first.stopped == 2
    assert stops == [contact.address_id, contact.address_id]
    assert [s.reason for s in active_suppressions(session, contact.address_id)] == ["unsubscribe"]
    assert current_consent(session, contact.address_id, Scope.MARKETING).status == "opted_out"


def test_tampered_token_changes_nothing(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
    before = (count(session, Suppression), count(session, Event))
    with pytest.raises(BadToken):
        apply_unsubscribe(session, SIGNER, token[:-2] + "zz", stop_queued=stopped_none, hit=HIT)
    assert (count(session, Suppression), count(session, Event)) == before


def test_token_for_an_unknown_address_is_refused_like_a_forged_one(session: Session) -> None:
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, 999_999)
    with pytest.raises(BadToken) as caught:
        apply_unsubscribe(session, SIGNER, token, stop_queued=stopped_none, hit=HIT)
    assert str(caught.value) == "this link is not valid"


def test_resubscribe_lifts_only_the_recipients_own_unsubscribe(session: Session) -> None:
    contact = make_contact(session, "ann@example.com")
    token = SIGNER.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
    apply_unsubscribe(session, SIGNER, token, stop_queued=stopped_none, hit=HIT)
    resubscribe(session, contact.address_id, hit=HIT)
    assert active_suppressions(session, contact.address_id) == []
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
        resubscribe(session, contact.address_id, hit=HIT)
    assert reason.value.replace("_", " ") in str(caught.value)
    assert len(active_suppressions(session, contact.address_id)) == 2
    assert current_consent(session, contact.address_id, Scope.MARKETING).status == "opted_out"
