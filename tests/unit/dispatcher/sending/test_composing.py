"""What recipients receive, parsed at the SMTP sink: bulk headers, a Message-ID unique to
this installation's campaign and stable across a retry, an honest footer, and links to the
company's site rather than to the recipient pages' host."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.services import create_campaign, get_campaign, schedule_campaign
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade
from dispatcher.sending.batch import send_batch
from dispatcher.sending.composing import ClaimedRow, MessageFactory
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner
from tests.conftest import settings_for
from tests.factories import make_contact
from tests.support.smtp_sink import SmtpSink


def send(settings: Settings, sessions: sessionmaker[Session], template: str) -> int:
    with session_scope(sessions) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
        campaign = create_campaign(
            session, settings, name="Winter", subject="{{ greeting_name }}, news", template=template
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    signer = TokenSigner(settings.secret_keys)
    for first, last in fan_out(sessions, campaign_id, 100):
        send_batch(settings, sessions, signer, campaign_id, first, last)
    return campaign_id


def test_marketing_mail_at_the_sink_is_bulk_mail_with_a_list_and_feedback_id(
    settings: Settings, session_factory, smtp_sink: SmtpSink
) -> None:
    local = settings.replace(mail_url=smtp_sink.url)
    campaign_id = send(local, session_factory, "new-releases")
    [received] = smtp_sink.wait_for_count(1, timeout=30)
    message = received.message
    assert message["List-Id"] == "Killer Tracks marketing <marketing.killertracks.com>"
    assert message["Feedback-ID"] == f"c{campaign_id}:marketing:killertracks"
    assert message["Precedence"] == "bulk"
    assert re.fullmatch(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000", message["Date"])
    assert parsedate_to_datetime(message["Date"]).utcoffset().total_seconds() == 0
    with session_scope(session_factory) as session:
        nonce = get_campaign(session, campaign_id).message_nonce
    assert re.fullmatch(r"[0-9a-f]{16}", nonce)
    assert re.fullmatch(
        rf"<c{campaign_id}\.{nonce}\.r1\.[0-9a-f]{{20}}@killertracks\.com>", message["Message-ID"]
    )


def test_the_footer_says_what_a_reply_does_and_links_go_to_the_company_site(
    settings: Settings, session_factory, smtp_sink: SmtpSink
) -> None:
    local = settings.replace(mail_url=smtp_sink.url)
    send(local, session_factory, "new-releases")
    [received] = smtp_sink.wait_for_count(1, timeout=30)
    html = received.message.get_body(("html",)).get_content()
    text = received.message.get_body(("plain",)).get_content()
    for part in (html, text):
        assert "do not reply" not in part.lower()
        assert not re.search(r"info@(?![\w.-])", part)  # no address without its domain
    assert "A reply to this message reaches Killer Tracks at info@killertracks.com." in text
    assert 'href="mailto:info@killertracks.com"' in html
    links = re.findall(r'href="([^"]+)"', html)
    assert "https://www.killertracks.com/new" in links
    assert "https://www.killertracks.com/" in links
    own = [link for link in links if link.startswith(local.base_url)]
    assert own and all(re.search(r"/(u|preferences)/[\w.-]+$", link) for link in own)


def test_message_id_is_stable_across_a_retry_and_unique_across_installations(
    tmp_path: Path,
) -> None:
    """Two installations (or one after a database reset) sending from the same domain: the
    same campaign id and contact id, different Message-IDs; a message built again keeps its."""
    ids = []
    for name in ("first", "second"):
        settings = settings_for(tmp_path / name)
        upgrade(settings)
        sessions = make_sessionmaker(make_engine(settings.database_url))
        with session_scope(sessions) as session:
            make_contact(session, "ann@example.com")
            campaign = create_campaign(
                session, settings, name="x", subject="s", template="new-releases"
            )
            factory = MessageFactory(settings, campaign, TokenSigner(settings.secret_keys))
            row = ClaimedRow(1, 1, 1, "ann@example.com", "Ann", None)
            first, again = factory.build(row), factory.build(row)
        found = [re.search(rb"Message-ID: (<[^>]+>)", raw).group(1) for raw in (first, again)]
        assert found[0] == found[1]  # a retry keeps it
        assert campaign.id == 1 and found[0].startswith(b"<c1.")
        ids.append(found[0])
    assert ids[0] != ids[1]


_SENDING_PROCESS = """
import json, sys
from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.sending.batch import send_batch
from dispatcher.settings import load_settings
from suppression.tokens import TokenSigner

settings = load_settings()
sessions = make_sessionmaker(make_engine(settings.database_url))
campaign_id, first, last = map(int, sys.argv[1:4])
result = send_batch(
    settings, sessions, TokenSigner(settings.secret_keys), campaign_id, first, last
)
print(json.dumps({"sent": len(result.sent), "premailer": "premailer" in sys.modules,
                  "lxml": "lxml" in sys.modules}))
"""


def test_a_scheduled_campaign_is_sent_by_a_process_that_never_loads_premailer(
    settings: Settings, session_factory, smtp_sink: SmtpSink
) -> None:
    """Scheduling stores the render with its CSS inlined; a sending process fills it in
    (premailer, lxml and cssutils stay out of its memory) and the mail is the same."""
    import json
    import os
    import subprocess
    import sys

    from sqlalchemy import select

    from dispatcher.models import CampaignRender
    from tests.conftest import TEST_KEYS

    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
        campaign = create_campaign(
            session,
            settings,
            name="Winter",
            subject="{{ greeting_name }}, news",
            template="new-releases",
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    with session_scope(session_factory) as session:
        stored = session.scalars(select(CampaignRender)).one()
        assert stored.campaign_id == campaign_id and len(stored.fingerprint) == 64
    [(first, last)] = list(fan_out(session_factory, campaign_id, 100))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_HOME=str(settings.home),
        DISPATCHER_SECRET_KEYS=TEST_KEYS,
        DISPATCHER_BASE_URL=settings.base_url,
        DISPATCHER_MAIL_URL=smtp_sink.url,
    )
    done = subprocess.run(
        [sys.executable, "-c", _SENDING_PROCESS, str(campaign_id), str(first), str(last)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"sent": 1, "premailer": False, "lxml": False}
    [received] = smtp_sink.wait_for_count(1, timeout=30)
    html = received.message.get_body(("html",)).get_content()
    assert "Hi Ann" in html or "Ann" in html
    assert 'style="' in html  # the CSS inlined at scheduling time
