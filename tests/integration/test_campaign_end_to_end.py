"""A campaign end to end: real worker, real broker, real SMTP server, parsed messages."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from dispatcher.campaigns.services import campaign_report, create_campaign, schedule_campaign
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import Delivery
from suppression.models import ConsentStatus, Reason
from suppression.suppressions import lift_suppressions
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.support.backends import Backend
from tests.support.recipient import Recipient
from workers.process import WorkerProcess, wait_until

ELIGIBLE = {
    "ann@example.com": "Ann",
    "bjorn@example.org": "Björn",
    "chloe@example.net": "Chloé",
    "dee@example.com": None,
    "lifted@example.com": "Lifted",  # hard bounce lifted by staff
    "not-for-affiliates@example.com": "Nora",  # suppressed for affiliates only
}


def populate(backend: Backend) -> None:
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        for address, first in ELIGIBLE.items():
            if address not in ("lifted@example.com", "not-for-affiliates@example.com"):
                make_contact(session, address, first_name=first)
        make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
        make_contact(session, "never@example.com", marketing=None)
        for reason in Reason:
            make_contact(
                session,
                f"{reason.value}@example.com",
                suppressed=reason,
                suppression_scope="global" if reason != Reason.UNSUBSCRIBE else "marketing",
            )
        lifted = make_contact(
            session,
            "lifted@example.com",
            first_name="Lifted",
            suppressed=Reason.HARD_BOUNCE,
            suppression_scope="global",
        )
        lift_suppressions(session, lifted.address_id, why="mailbox fixed", actor="staff")
        make_contact(
            session,
            "not-for-affiliates@example.com",
            first_name="Nora",
            suppressed=Reason.MANUAL,
            suppression_scope="affiliates",
        )


def run_campaign(backend: Backend, name: str) -> int:
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        campaign = create_campaign(
            session,
            backend.settings,
            name=name,
            subject="{{ greeting_name }}, new tracks",
            template="new-releases",
        )
        schedule_campaign(session, backend.settings, campaign.id)
        campaign_id = campaign.id

    def done() -> bool:
        with session_scope(sessions) as session:
            return campaign_report(session, campaign_id).status == "done"

    wait_until(done, 120, what=f"campaign {campaign_id} done")
    return campaign_id


def by_recipient(messages: list[tuple[list[str], EmailMessage]]) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for recipients, message in messages:
        for rcpt in recipients:
            found.setdefault(rcpt, []).append(message)
    return found


def test_campaign_reaches_exactly_the_eligible_and_unsubscribe_closes_the_loop(
    backend: Backend, smtp_sink, tmp_path: Path
) -> None:
    populate(backend)
    signer = TokenSigner(backend.settings.secret_keys)
    env = backend.env(mail_url=smtp_sink.url)
    with WorkerProcess(env, tmp_path / "worker.log", concurrency=2):
        first = run_campaign(backend, "first")
        received = by_recipient(smtp_sink.envelopes())
        assert set(received) == set(ELIGIBLE)
        assert all(len(msgs) == 1 for msgs in received.values())

        for address, (message,) in received.items():
            assert message["From"] == "Killer Tracks <info@killertracks.com>"
            assert address in message["To"]
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            # Unique per installation (nonce), signed so a report quoting it is ours (tag).
            message_id = rf"<c{first}\.[0-9a-f]{{16}}\.r\d+\.[0-9a-f]{{20}}@killertracks\.com>"
            assert re.fullmatch(message_id, message["Message-ID"])
            links = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
            https = [u for u in links if u.startswith("http")]
            assert len(https) == 1 and any(u.startswith("mailto:") for u in links)
            text = message.get_body(("plain",)).get_content()
            html = message.get_body(("html",)).get_content()
            assert https[0] in text and https[0] in html
            assert "2110 Colorado Avenue" in text and "2110 Colorado Avenue" in html
            token = urlsplit(https[0]).path.rsplit("/", 1)[1]
            subject = signer.read_link(LinkPurpose.UNSUBSCRIBE, token)
            assert subject.campaign_id == first

        # Unsubscribe Ann through her own link's token.
        ann = received["ann@example.com"][0]
        url = [
            u for u in re.findall(r"<([^>]+)>", ann["List-Unsubscribe"]) if u.startswith("http")
        ][0]
        sessions = make_sessionmaker(make_engine(backend.settings.database_url))
        Recipient(backend.settings).one_click(url.rsplit("/", 1)[1])
        smtp_sink.clear()

        second = run_campaign(backend, "second")
        received = by_recipient(smtp_sink.envelopes())
        assert set(received) == set(ELIGIBLE) - {"ann@example.com"}

    with session_scope(sessions) as session:
        report = campaign_report(session, second)
        assert report.by_status["sent"] == len(ELIGIBLE) - 1
        assert report.by_status["queued"] == report.by_status["sending"] == 0
        assert report.by_reason["unsubscribe"] == 2  # Ann now, and unsubscribe@ before
        statuses = set(session.scalars(select(Delivery.status)))
        assert statuses <= {"sent", "suppressed"}


def test_service_notice_reaches_opted_out_but_not_postal_requests(
    backend: Backend, smtp_sink, tmp_path: Path
) -> None:
    """Sent through its own queue (``<queue>.notices``), which a plain worker consumes too."""
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        make_contact(session, "in@example.com")
        make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
        make_contact(session, "never@example.com", marketing=None)
        make_contact(session, "unsub@example.com", suppressed=Reason.UNSUBSCRIBE)
        make_contact(
            session,
            "post@example.com",
            suppressed=Reason.POSTAL_REQUEST,
            suppression_scope="global",
        )
        make_contact(
            session, "bounce@example.com", suppressed=Reason.HARD_BOUNCE, suppression_scope="global"
        )
        campaign = create_campaign(
            session,
            backend.settings,
            name="terms",
            subject="Changes to our licence terms",
            template="terms-update",
            purpose="service_notice",
        )
        schedule_campaign(session, backend.settings, campaign.id)
        campaign_id = campaign.id
    with WorkerProcess(backend.env(mail_url=smtp_sink.url), tmp_path / "w.log"):

        def done() -> bool:
            with session_scope(sessions) as session:
                return campaign_report(session, campaign_id).status == "done"

        wait_until(done, 120, what="notice campaign done")
    received = by_recipient(smtp_sink.envelopes())
    assert set(received) == {
        "in@example.com",
        "out@example.com",
        "never@example.com",
        "unsub@example.com",
    }
    message = received["out@example.com"][0]
    assert message["List-Unsubscribe"] is None  # not marketing: no unsubscribe header
    assert "2110 Colorado Avenue" in message.get_body(("plain",)).get_content()
