"""What a report may change: only a delivery of ours named with a valid tag, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.campaigns.counts import rebuild
from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.inbound import returnpath
from dispatcher.inbound.apply import process_message
from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, InboundMessage
from dispatcher.settings import Settings
from suppression.models import ConsentState, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.conftest import TEST_KEYS
from tests.factories import make_contact

CORPUS = Path(__file__).resolve().parents[3] / "data" / "inbound"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(TEST_KEYS.split(","))


def sent_campaign(session: Session, *addresses: str, status: str = "sending") -> Campaign:
    for address in addresses:
        make_contact(session, address)
    campaign = Campaign(
        name="c", subject="s", template="new-releases", purpose="marketing", status=status
    )
    session.add(campaign)
    session.flush()
    create_deliveries(session, campaign)
    session.execute(
        Delivery.__table__.update()
        .where(Delivery.campaign_id == campaign.id)
        .values(status=DeliveryStatus.SENT.value)
    )
    rebuild(session, campaign.id)  # the rows were moved by hand: count them again
    return campaign


def delivery_of(session: Session, campaign: Campaign, address: str) -> Delivery:
    from suppression.models import Address

    return session.scalars(
        select(Delivery)
        .join(Address, Address.id == Delivery.address_id)
        .where(Delivery.campaign_id == campaign.id, Address.address == address)
    ).one()


def dsn(
    to: str,
    recipient: str,
    status: str = "5.1.1",
    mid: str = "<r1@mx.example>",
    action: str = "failed",
) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
        f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
        f"\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "\r\n--B--\r\n"
    ).encode()


def suppressions(session: Session, reason: str | None = None) -> int:
    stmt = select(func.count()).select_from(Suppression).where(Suppression.lifted_at.is_(None))
    if reason:
        stmt = stmt.where(Suppression.reason == reason)
    return int(session.scalar(stmt) or 0)


def process(session: Session, settings: Settings, signer: TokenSigner, raw: bytes, **kw: object):
    return process_message(session, settings, signer, raw, source="test", **kw)  # type: ignore[arg-type]


def test_hard_bounce_to_our_verp_address_suppresses_and_marks_the_delivery(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    campaign = sent_campaign(session, "gone@example.org", "ok@example.org")
    delivery = delivery_of(session, campaign, "gone@example.org")
    verp = returnpath.verp_address(signer, settings.return_path, delivery.id)

    done = process(session, settings, signer, dsn(verp, "gone@example.org"))

    assert (done.outcome, done.delivery_id) == ("applied", delivery.id)
    assert suppressions(session, "hard_bounce") == 1
    assert delivery.feedback == "hard_bounce"
    row = session.scalars(select(InboundMessage)).one()
    assert (row.kind, row.outcome, row.delivery_id) == ("hard_bounce", "applied", delivery.id)


def test_the_verp_tag_survives_an_mta_that_uppercases_the_address(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    campaign = sent_campaign(session, "gone@example.org")
    delivery = delivery_of(session, campaign, "gone@example.org")
    verp = returnpath.verp_address(signer, settings.return_path, delivery.id).upper()

    assert process(session, settings, signer, dsn(verp, "x@y")).outcome == "applied"


def test_replaying_a_report_applies_nothing_twice(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    campaign = sent_campaign(session, "gone@example.org")
    delivery = delivery_of(session, campaign, "gone@example.org")
    raw = dsn(returnpath.verp_address(signer, settings.return_path, delivery.id), "g@x")
    process(session, settings, signer, raw)

    again = process(session, settings, signer, raw)

    assert again.duplicate
    assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1


@pytest.mark.parametrize("forgery", ["bad tag", "foreign key", "no token"])
def test_a_forged_bounce_changes_nothing_and_is_recorded_unmatched(
    session: Session, settings: Settings, signer: TokenSigner, forgery: str
) -> None:
    campaign = sent_campaign(session, "victim@example.org")
    delivery = delivery_of(session, campaign, "victim@example.org")
    good = returnpath.verp_address(signer, settings.return_path, delivery.id)
    to = {
        "bad tag": good.replace(good.split(".")[1].split("@")[0], "0" * 20),
        "foreign key": returnpath.verp_address(
            TokenSigner(["another-key-of-someone-else"]), settings.return_path, delivery.id
        ),
        "no token": "bounces@killertracks.com",
    }[forgery]
    # It even names the victim and a Message-ID of our shape without a valid tag.
    raw = dsn(to, "victim@example.org").replace(
        b"failed\r\n", f"Message-ID: <c{campaign.id}.r1.{'a' * 20}@killertracks.com>\r\n".encode()
    )

    done = process(session, settings, signer, raw)

    assert done.outcome == "unmatched"
    assert suppressions(session) == 0
    assert delivery.feedback is None


def test_a_report_naming_our_message_id_matches_without_verp(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    campaign = sent_campaign(session, "kim@yahoo.example")
    delivery = delivery_of(session, campaign, "kim@yahoo.example")
    mid = returnpath.message_id(
        signer, campaign.id, delivery.contact_id, "killertracks.com", campaign.message_nonce
    )
    raw = (
        (CORPUS / "local" / "arf_yahoo.eml")
        .read_bytes()
        .replace(b"<c1.r1@killertracks.com>", mid.encode())
    )

    done = process(session, settings, signer, raw)

    assert (done.outcome, done.delivery_id) == ("applied", delivery.id)
    assert suppressions(session, "complaint") == 1
    assert delivery.feedback == "complaint"


def test_soft_bounces_suppress_at_the_limit(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    settings = settings.replace(soft_bounce_limit=3)
    campaign = sent_campaign(session, "full@example.org")
    delivery = delivery_of(session, campaign, "full@example.org")
    verp = returnpath.verp_address(signer, settings.return_path, delivery.id)
    for n in range(2):
        process(session, settings, signer, dsn(verp, "f@x", "4.2.0", f"<s{n}@mx>", "delayed"))
        assert suppressions(session) == 0
    process(session, settings, signer, dsn(verp, "f@x", "4.2.0", "<s3@mx>", "delayed"))
    # Their own reason, not hard_bounce: the mailbox may work again, and staff can tell.
    assert suppressions(session, "repeated_soft_bounce") == 1
    assert suppressions(session, "hard_bounce") == 0
    assert delivery.feedback == "soft_bounce"


def test_mailto_unsubscribe_with_our_token_opts_out_and_stops_queued_mail(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    later = sent_campaign(session, "kim@example.org", status="sending")
    session.execute(
        Delivery.__table__.update()
        .where(Delivery.campaign_id == later.id)
        .values(status=DeliveryStatus.QUEUED.value)
    )
    queued = delivery_of(session, later, "kim@example.org")
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, queued.address_id, later.id)
    raw = (
        "From: someone-else@example.net\r\nTo: unsubscribe@killertracks.com\r\n"
        f"Subject: unsubscribe {token}\r\nMessage-ID: <u1@example.net>\r\n\r\n"
    ).encode()

    done = process(session, settings, signer, raw)

    assert done.outcome == "applied"
    assert suppressions(session, "unsubscribe") == 1
    session.refresh(queued)
    assert queued.status == "cancelled"
    state = session.get(ConsentState, (queued.address_id, "marketing"))
    assert state is not None and state.status == "opted_out"


def test_please_remove_me_from_a_known_address_is_applied_unverified(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    make_contact(session, "alex@example.org")
    raw = (CORPUS / "local" / "please_remove.eml").read_bytes()

    assert process(session, settings, signer, raw).outcome == "unverified"
    assert suppressions(session, "unsubscribe") == 1


def test_please_remove_me_from_a_stranger_changes_nothing(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    raw = (CORPUS / "local" / "please_remove.eml").read_bytes()
    assert process(session, settings, signer, raw).outcome == "unmatched"
    assert suppressions(session) == 0


def test_a_tampered_unsubscribe_token_falls_back_to_unverified_only_for_the_sender(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    make_contact(session, "victim@example.org")
    raw = (
        b"From: stranger@example.net\r\nTo: unsubscribe@killertracks.com\r\n"
        b"Subject: unsubscribe WzEsImFiYyIsMSwxXQ.forged\r\nMessage-ID: <u2@x>\r\n\r\n"
    )
    assert process(session, settings, signer, raw).outcome == "unmatched"
    assert suppressions(session) == 0


def test_auto_replies_change_nothing(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    campaign = sent_campaign(session, "sam@example.net")
    delivery = delivery_of(session, campaign, "sam@example.net")
    verp = returnpath.verp_address(signer, settings.return_path, delivery.id)
    raw = (
        (CORPUS / "local" / "autoreply_rfc3834.eml")
        .read_bytes()
        .replace(b"bounces+abc@killertracks.com", verp.encode())
    )
    assert process(session, settings, signer, raw).outcome == "ignored"
    assert suppressions(session) == 0


def test_complaints_over_the_threshold_pause_the_campaign_with_the_reason(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    settings = settings.replace(pause_min_sent=10, complaint_pause_rate=0.05)
    addresses = [f"r{i}@example.org" for i in range(10)]
    campaign = sent_campaign(session, *addresses)
    arf = (CORPUS / "local" / "arf_yahoo.eml").read_bytes()
    for n, address in enumerate(addresses[:1]):
        delivery = delivery_of(session, campaign, address)
        mid = returnpath.message_id(
            signer, campaign.id, delivery.contact_id, "killertracks.com", campaign.message_nonce
        )
        raw = arf.replace(b"<c1.r1@killertracks.com>", mid.encode()).replace(
            b"arf-20261201-0815-0001", f"arf-{n}".encode()
        )
        process(session, settings, signer, raw)
    assert campaign.status == CampaignStatus.PAUSED
    assert campaign.status_reason is not None and "complaint rate 10.00%" in campaign.status_reason


def test_unparsed_input_is_recorded_with_its_raw_bytes_bounded(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    settings = settings.replace(inbound_keep_bytes=1000)
    raw = b"From: a@b\r\nX-Junk: a\r\n" + b" b\r\n" * 200_000 + b"\r\n"
    done = process(session, settings, signer, raw)
    row = session.scalars(select(InboundMessage)).one()
    assert done.outcome == "unparsed"
    assert row.raw is not None and len(row.raw) == 1000 and row.raw_size == len(raw)


def test_a_repeated_soft_bounce_is_lifted_by_staff_and_not_by_the_recipient(
    session: Session, settings: Settings, signer: TokenSigner
) -> None:
    from dispatcher.contacts.suppress import lift_address
    from dispatcher.privacy.access import person_record
    from suppression.events import Hit
    from suppression.unsubscribe import CannotResubscribe, resubscribe

    settings = settings.replace(soft_bounce_limit=1)
    campaign = sent_campaign(session, "full@example.org")
    delivery = delivery_of(session, campaign, "full@example.org")
    verp = returnpath.verp_address(signer, settings.return_path, delivery.id)
    process(session, settings, signer, dsn(verp, "f@x", "4.2.2", "<q1@mx>", "delayed"))

    with pytest.raises(CannotResubscribe, match="repeated soft bounce"):
        resubscribe(session, delivery.address_id, hit=Hit(), source="preferences")
    assert suppressions(session, "repeated_soft_bounce") == 1
    # The person's data export names it as it is.
    held = person_record(session, "full@example.org", actor="admin")["suppressions"]
    assert [(s["reason"], s["source"]) for s in held] == [
        ("repeated_soft_bounce", "inbound:test:soft_bounces")
    ]

    lifted = lift_address(
        session,
        "full@example.org",
        why="mailbox emptied",
        actor="admin",
        only="repeated_soft_bounce",
    )
    assert lifted == 1 and suppressions(session) == 0
