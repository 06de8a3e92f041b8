"""Affiliate sharing: exactly the people the rule allows, exactly the fields agreed."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.affiliates import (
    AffiliateError,
    add_affiliate,
    authenticate,
    disable_affiliate,
    export,
    export_rows,
    feed,
    get_affiliate,
)
from dispatcher.db import session_scope
from dispatcher.deliveries import stop_queued
from dispatcher.models import AffiliateRelease, Contact
from dispatcher.settings import Settings
from suppression.address import address_digest
from suppression.consent import record_consent
from suppression.events import Hit
from suppression.models import ConsentStatus, Event, Reason, Scope
from suppression.registry import ensure_address
from suppression.suppressions import add_suppression, lift_suppressions
from suppression.tokens import LinkPurpose, TokenSigner
from suppression.unsubscribe import apply_unsubscribe
from tests.factories import T0

IN, OUT = ConsentStatus.OPTED_IN, ConsentStatus.OPTED_OUT
OTHER_AFFILIATE = 999

consent_events = st.lists(st.sampled_from([IN, OUT]), max_size=3)
person = st.fixed_dictionaries(
    {
        "marketing": consent_events,
        "affiliates": consent_events,
        "suppressions": st.lists(
            st.tuples(
                st.sampled_from(
                    ["global", "marketing", "affiliates", "THIS", f"affiliate:{OTHER_AFFILIATE}"]
                ),
                st.sampled_from(list(Reason)),
                st.booleans(),
            ),
            max_size=2,
        ),
        "genre": st.sampled_from(["jazz", "folk", ""]),
    }
)


def build(session: Session, people: list[dict], affiliate_id: int) -> set[str]:
    """Write the generated history; return the addresses the rule says may be shared."""
    expected = set()
    for index, p in enumerate(people):
        address = f"p{index}@example.com"
        address_id = ensure_address(session, address)
        session.add(
            Contact(
                address_id=address_id,
                submitted_address=address,
                first_name="F",
                last_name="L",
                attributes={"genre": p["genre"], "secret": "x"},
                source="t",
                collected_at=T0,
            )
        )
        latest = {}
        for scope in (Scope.MARKETING, Scope.AFFILIATES):
            for step, status in enumerate(p[scope.value]):
                record_consent(
                    session,
                    address_id,
                    scope,
                    status,
                    source="t",
                    occurred_at=T0 + timedelta(days=step),
                    recipient_action=True,
                )
                latest[scope] = status
        blocked = False
        for scope, reason, lifted in p["suppressions"]:
            scope = f"affiliate:{affiliate_id}" if scope == "THIS" else scope
            add_suppression(session, address_id, scope=scope, reason=reason, source="t")
            if lifted:
                lift_suppressions(session, address_id, why="t", actor="t")
                blocked = False
            elif scope != f"affiliate:{OTHER_AFFILIATE}":
                blocked = True
        if latest.get(Scope.MARKETING) == IN and latest.get(Scope.AFFILIATES) == IN and not blocked:
            expected.add(address)
    session.flush()
    return expected


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=st.lists(person, min_size=1, max_size=6))
def test_export_is_exactly_the_rule_and_only_whitelisted_fields(
    session: Session, people: list[dict]
) -> None:
    savepoint = session.begin_nested()
    try:
        affiliate, _ = add_affiliate(
            session, "label-one", contact="a@label.example", fields="email,genre", actor="t"
        )
        expected = build(session, people, affiliate.id)
        rows = list(export_rows(session, affiliate))
        assert {r[0] for r in rows} == expected
        assert all(len(r) == 2 for r in rows)  # email and genre: never names or "secret"
    finally:
        savepoint.rollback()


def test_fields_outside_the_allow_list_are_refused(session: Session) -> None:
    for fields, message in [
        ("email,id", "never shared"),
        ("", "names no field"),
        ("email,email", "twice"),
        ("e-mail;x", "cannot be shared"),
    ]:
        with pytest.raises(AffiliateError, match=message):
            add_affiliate(session, "x-co", contact="a@x.example", fields=fields, actor="t")


def test_credentials_are_hashed_and_checked(session: Session) -> None:
    affiliate, credential = add_affiliate(
        session, "label-one", contact="a@l.example", fields="email", actor="t"
    )
    assert credential not in affiliate.credential_hash
    assert authenticate(session, "label-one", credential) is affiliate
    assert authenticate(session, "label-one", credential + "x") is None
    assert authenticate(session, "nobody", credential) is None
    disable_affiliate(session, "label-one", actor="t")
    assert authenticate(session, "label-one", credential) is None


def shareable(session: Session, address: str) -> int:
    address_id = ensure_address(session, address)
    session.add(
        Contact(
            address_id=address_id,
            submitted_address=address,
            first_name="Ann",
            last_name="Lee",
            attributes={},
            source="t",
            collected_at=T0,
        )
    )
    for scope in Scope:
        record_consent(session, address_id, scope, IN, source="t", occurred_at=T0)
    return address_id


def test_unsubscribed_after_one_export_is_absent_from_the_next_and_in_the_feed(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        ann = shareable(session, "ann@example.com")
        shareable(session, "bob@example.com")
        add_affiliate(
            session, "label-one", contact="a@l.example", fields="email,first_name", actor="t"
        )
    first = export(session_factory, settings, "label-one", actor="staff")
    assert first.rows == 2
    with open(first.path, newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [
            ["email", "first_name"],
            ["ann@example.com", "Ann"],
            ["bob@example.com", "Ann"],
        ]
    signer = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        apply_unsubscribe(
            session,
            signer,
            signer.sign_link(LinkPurpose.UNSUBSCRIBE, ann),
            stop_queued=stop_queued,
            hit=Hit(),
        )
    second = export(session_factory, settings, "label-one", actor="staff")
    assert second.rows == 1 and "ann@" not in Path(second.path).read_text()
    with session_scope(session_factory) as session:
        affiliate = get_affiliate(session, "label-one")
        digests, since = feed(session, affiliate, since=first_created(session), actor="t")
        assert digests == [address_digest("ann@example.com")]
        audits = session.scalars(select(Event.kind).where(Event.kind.like("affiliate_%")))
        assert sorted(audits) == [
            "affiliate_added",
            "affiliate_export",
            "affiliate_export",
            "affiliate_feed",
        ]
        releases = session.scalars(select(AffiliateRelease).order_by(AffiliateRelease.id)).all()
        assert [(r.kind, r.row_count, r.requested_by) for r in releases] == [
            ("export", 2, "staff"),
            ("export", 1, "staff"),
            ("feed", 1, "t"),
        ]
        assert releases[0].sha256 != releases[1].sha256


def first_created(session: Session):  # type: ignore[no-untyped-def]
    return session.scalar(select(AffiliateRelease.created_at).order_by(AffiliateRelease.id))


def test_disabled_affiliate_gets_no_export(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        add_affiliate(session, "gone", contact="a@l.example", fields="email", actor="t")
        disable_affiliate(session, "gone", actor="t")
    with pytest.raises(AffiliateError, match="disabled"):
        export(session_factory, settings, "gone", actor="t")
