"""Erasure: nothing that names the person is left anywhere, and they are never mailed again."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.inbound.apply import process_message
from dispatcher.models import AffiliateShare, Campaign, Contact, Delivery, InboundMessage
from dispatcher.privacy.erasure import ErasureError, erase_person
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.sharing.export import export, withdrawn_digests
from suppression.address import address_digest
from suppression.consent import record_consent
from suppression.erasure import erased_among
from suppression.events import Hit, record_event
from suppression.models import Base, ConsentStatus, Reason, Scope, Suppression
from suppression.registry import ensure_address
from suppression.suppressions import SuppressionError, lift_suppressions
from suppression.tokens import TokenSigner
from tests.factories import T0, make_contact
from tests.unit.dispatcher.inbound.test_apply import delivery_of, dsn, sent_campaign


def _signer(settings: Settings) -> TokenSigner:
    return TokenSigner(settings.secret_keys)


def every_text(session: Session) -> str:
    """Every text and JSON value of every table, as one string to search."""
    parts: list[str] = []
    for table in Base.metadata.sorted_tables:
        columns = [c for c in table.c if isinstance(c.type, String | Text) or "JSON" in str(c.type)]
        if not columns:
            continue
        for row in session.execute(select(*columns)):
            parts.extend(str(v) for v in row if v is not None)
    return "\n".join(parts)


def populate_person(session: Session, address: str, name: str, ip: str) -> int:
    contact = make_contact(
        session,
        address,
        first_name=name,
        last_name=name + "son",
        affiliates=ConsentStatus.OPTED_IN,
        attributes={"city": name + "ville"},
    )
    hit = Hit(ip=ip, user_agent=f"Browser/{name}")
    record_consent(
        session,
        contact.address_id,
        Scope.MARKETING,
        ConsentStatus.OPTED_IN,
        source="form",
        occurred_at=T0 + timedelta(days=1),
        hit=hit,
        recipient_action=True,
    )
    record_event(session, "web_hit", address_id=contact.address_id, hit=hit, outcome="valid")
    return contact.address_id


def test_erasure_leaves_no_trace_and_keeps_the_person_suppressed(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        aid = populate_person(session, "Jorg.Person@Example.org", "Zebulon", "198.51.100.77")
        make_contact(session, "keep@example.org", first_name="Keeper")
        campaign = Campaign(name="c", subject="s", template="new-releases", purpose="marketing")
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
    with session_scope(session_factory) as session:
        report = erase_person(
            session, _signer(settings), "jorg.person@example.org", reason="ticket 7", actor="dpo"
        )
    assert report.newly_erased and report.was_known and report.stopped == 1
    with session_scope(session_factory) as session:
        text = every_text(session).lower()
        for trace in ("jorg.person", "zebulon", "198.51.100.77", "browser/zebulon"):
            assert trace not in text, trace
        assert "keeper" in text  # the other person is untouched
        # Stats keep their counts: the delivery row stays, without personal data.
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2
        reasons = session.scalars(
            select(Suppression.reason).where(
                Suppression.address_id == aid, Suppression.lifted_at.is_(None)
            )
        )
        assert Reason.ERASED.value in set(reasons)
        # Nobody lifts it.
        assert lift_suppressions(session, aid, why="oops", actor="staff") == 0
        assert erased_among(session, _signer(settings), ["jorg.person@example.org"]) == {
            "jorg.person@example.org"
        }


def test_rerunning_is_a_no_op_and_unknown_addresses_are_recorded(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    signer = _signer(settings)
    with session_scope(session_factory) as session:
        first = erase_person(session, signer, "never@example.org", reason="r", actor="dpo")
    with session_scope(session_factory) as session:
        again = erase_person(session, signer, "NEVER@example.org", reason="r", actor="dpo")
        assert first.newly_erased and not first.was_known
        assert not again.newly_erased
        assert erased_among(session, signer, ["never@example.org"]) == {"never@example.org"}
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
    with pytest.raises(ErasureError), session_scope(session_factory) as session:
        erase_person(session, signer, "x@example.org", reason="  ", actor="dpo")


def test_a_campaign_never_reaches_an_erased_address_given_again(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Even if the plain address were added again, the erased row's hash is what the
    importer checks, and the gate blocks the erased row itself."""
    signer = _signer(settings)
    with session_scope(session_factory) as session:
        make_contact(session, "gone@example.org")
    with session_scope(session_factory) as session:
        erase_person(session, signer, "gone@example.org", reason="r", actor="dpo")
        campaign = Campaign(name="c", subject="s", template="new-releases", purpose="marketing")
        notice = Campaign(name="n", subject="s", template="terms-update", purpose="service_notice")
        session.add_all([campaign, notice])
        session.flush()
        create_deliveries(session, campaign)
        create_deliveries(session, notice)
    from dispatcher.sending.batch import claim_batch

    with session_scope(session_factory) as session:
        for c in session.scalars(select(Campaign)):
            c.status = "sending"
            ids = list(session.scalars(select(Delivery.id).where(Delivery.campaign_id == c.id)))
            rows, skipped = claim_batch(session, c, min(ids), max(ids), "t")
            assert rows == [] and skipped == len(ids)


def test_staff_cannot_use_the_erased_reason_by_hand() -> None:
    from suppression.suppressions import valid_reason

    with pytest.raises(SuppressionError, match="person erase"):
        valid_reason("erased")


def test_affiliates_that_held_the_person_find_them_in_the_feed(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "shared@example.org", affiliates=ConsentStatus.OPTED_IN)
        make_contact(session, "other@example.org", affiliates=ConsentStatus.OPTED_IN)
        add_affiliate(session, "partner", contact="p@partner.example", fields="email", actor="a")
    release = export(session_factory, settings, "partner", actor="a", out=tmp_path / "l.csv")
    with release.path.open(encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 3
    with session_scope(session_factory) as session:
        erase_person(session, _signer(settings), "shared@example.org", reason="r", actor="dpo")
    # Our copy of the list that held them is gone; the feed names them by the digest the
    # affiliate already holds, and nobody else.
    assert not release.path.exists()
    with session_scope(session_factory) as session:
        digests = withdrawn_digests(
            session, release.affiliate_id, since=None, release_id=release.release_id
        )
        assert digests == [address_digest("shared@example.org")]
        assert session.scalar(select(func.count()).select_from(AffiliateShare)) == 2


@given(
    people=st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{4,8}", fullmatch=True),
            st.from_regex(r"[A-Z][a-z]{5,9}", fullmatch=True),
            st.integers(1, 254),
        ),
        min_size=1,
        max_size=5,
        unique_by=(lambda p: p[0], lambda p: p[1], lambda p: p[2]),
    ),
    pick=st.integers(0, 4),
)
@hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_property_no_table_holds_the_erased_person(
    settings: Settings, session_factory: sessionmaker[Session], people: list, pick: int
) -> None:
    with session_scope(session_factory) as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "alembic_version":
                session.execute(table.delete())
        for local, name, octet in people:
            populate_person(session, f"{local}@example.net", name, f"203.0.113.{octet}")
    local, name, octet = people[pick % len(people)]
    with session_scope(session_factory) as session:
        erase_person(session, _signer(settings), f"{local}@example.net", reason="r", actor="d")
    with session_scope(session_factory) as session:
        text = every_text(session)
        assert f"{local}@example.net" not in text
        assert name not in text
        assert f"203.0.113.{octet}" not in text.split()
        others = [p for p in people if p[0] != local]
        for other_local, other_name, _ in others:
            assert f"{other_local}@example.net" in text and other_name in text
        assert session.scalar(select(func.count()).select_from(Contact)) == len(people)


def test_registry_address_of_erased_person_is_not_reused(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        ensure_address(session, "again@example.org")
        erase_person(session, _signer(settings), "again@example.org", reason="r", actor="d")
        assert erased_among(session, _signer(settings), ["again@example.org", "x@y.org"]) == {
            "again@example.org"
        }


def test_a_signup_of_an_erased_address_sends_nothing_and_records_nothing(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from dispatcher.models import SignupRequest
    from dispatcher.signup.services import SignupForm, request_signup

    signer = _signer(settings)
    with session_scope(session_factory) as session:
        make_contact(session, "back@example.org")
    with session_scope(session_factory) as session:
        erase_person(session, signer, "back@example.org", reason="r", actor="d")
    with session_scope(session_factory) as session:
        form = SignupForm(email="Back@Example.org", marketing=True, affiliates=False)
        outcome, mail = request_signup(session, settings, signer, form, Hit(ip="192.0.2.1"))
        assert (outcome, mail) == ("blocked", None)
        assert session.scalar(select(func.count()).select_from(SignupRequest)) == 0
        assert "back@example.org" not in every_text(session).lower()


def test_an_import_refuses_an_erased_address_by_line(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from dispatcher.contacts.importer import ImportFileError, import_contacts

    signer = _signer(settings)
    with session_scope(session_factory) as session:
        erase_person(session, signer, "gone@example.org", reason="r", actor="d")
    path = tmp_path / "c.csv"
    path.write_text(
        "email,first_name,marketing_consent\n"
        "ok@example.org,Ann,opted_in\n"
        "GONE@example.org,Zed,opted_in\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportFileError, match="signer"):
        import_contacts(session_factory, path, source="t")
    report = import_contacts(session_factory, path, source="t", signer=signer)
    assert [(e.line, e.field) for e in report.errors] == [(3, "email")]
    assert "erased" in report.errors[0].reason
    with session_scope(session_factory) as session:
        text = every_text(session).lower()
        assert "ok@example.org" in text and "gone@example.org" not in text and "zed" not in text


def test_erasure_leaves_the_address_in_the_bounces_it_matched(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Red team (h/redteam-input): a bounce matched to the person kept their address in clear
    in ``detail["recipients"]`` (forever: retention drops only ``raw``) and in ``raw``."""
    signer = _signer(settings)
    with session_scope(session_factory) as session:
        campaign = sent_campaign(session, "zed.gone@example.org", "ann@example.org")
        for who, mid in (("zed.gone@example.org", "<r1@mx>"), ("ann@example.org", "<r2@mx>")):
            delivery = delivery_of(session, campaign, who)
            verp = returnpath.verp_address(signer, settings.return_path, delivery.id)
            bounce = dsn(verp, who.replace("zed", "Zed"), mid=mid)
            done = process_message(session, settings, signer, bounce, source="file")
            assert done.outcome == "applied"
        # A bounce we could not match still names them.
        unmatched = dsn("bounces@elsewhere.example", "ZED.gone@Example.org", mid="<r3@mx>")
        assert process_message(session, settings, signer, unmatched, source="file").outcome == (
            "unmatched"
        )
    with session_scope(session_factory) as session:
        erase_person(session, signer, "zed.gone@example.org", reason="ticket 9", actor="dpo")
    with session_scope(session_factory) as session:
        raws = b"".join(r or b"" for r in session.scalars(select(InboundMessage.raw)))
        assert "zed.gone" not in every_text(session).lower()
        assert b"zed.gone" not in raws.lower()
        # Ann's bounce is not hers: it keeps its report; every row keeps kind and outcome.
        assert b"ann@example.org" in raws
        rows = session.execute(select(InboundMessage.kind, InboundMessage.outcome)).all()
        assert sorted(o for _, o in rows) == ["applied", "applied", "unmatched"]
