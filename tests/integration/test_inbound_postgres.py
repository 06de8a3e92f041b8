"""What anyone can mail to bounces@ and unsubscribe@, read on PostgreSQL, which refuses NUL in
text (SQLite, which the unit tests use, stores it): a header that decodes to a NUL is stored
under a key and with text PostgreSQL accepts, and neither a mailbox read in order (maildir,
IMAP) nor the spool of unsubscribes accepted while the database was away stops at it.

The first two tests are the red-team review's (branch h/redteam-input), kept as written in
substance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade
from dispatcher.inbound import returnpath, spool
from dispatcher.inbound.sources import poll_imap, poll_maildir
from dispatcher.inbound.spooled import apply_spooled
from dispatcher.models import InboundMessage
from dispatcher.settings import Settings
from suppression.models import Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.conftest import settings_for
from tests.factories import make_contact
from tests.support.backends import postgres_database, require
from tests.support.imap_server import ImapServer
from tests.support.smtp_sink import self_signed_certificate
from tests.unit.dispatcher.inbound.test_apply import delivery_of, dsn, sent_campaign

pytestmark = pytest.mark.integration

# From anyone: a Message-ID written as an RFC 2047 word that decodes to a NUL.
POISON = (
    b"From: x@example.net\r\nTo: bounces@killertracks.com\r\n"
    b"Subject: hello\r\nMessage-ID: =?utf-8?q?=00?=\r\n\r\nhi\r\n"
)


@dataclass
class Pg:
    settings: Settings
    sessions: sessionmaker[Session]
    signer: TokenSigner


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Pg]:
    """A new, migrated PostgreSQL database (fails, not skips, under CI=true without one)."""
    require("postgresql")
    with postgres_database() as url:
        settings = settings_for(tmp_path / "home", database_url=url)
        upgrade(settings)
        engine = make_engine(url)
        try:
            yield Pg(settings, make_sessionmaker(engine), TokenSigner(settings.secret_keys))
        finally:
            engine.dispose()


def contact(pg: Pg, address: str) -> int:
    with session_scope(pg.sessions) as session:
        return make_contact(session, address).address_id


def mailto_unsubscribe(pg: Pg, address: str, address_id: int, mid: str) -> bytes:
    token = pg.signer.sign_link(LinkPurpose.UNSUBSCRIBE, address_id, None)
    return (
        f"From: {address}\r\nTo: unsubscribe@killertracks.com\r\n"
        f"Subject: unsubscribe {token}\r\nMessage-ID: {mid}\r\n\r\n"
    ).encode()


def reasons(pg: Pg, address_id: int) -> list[str]:
    with session_scope(pg.sessions) as session:
        return list(
            session.scalars(select(Suppression.reason).where(Suppression.address_id == address_id))
        )


def keys(pg: Pg) -> list[str]:
    with session_scope(pg.sessions) as session:
        return list(session.scalars(select(InboundMessage.key).order_by(InboundMessage.id)))


def test_one_mail_with_a_nul_message_id_does_not_stop_the_mailbox_poll(
    pg: Pg, tmp_path: Path
) -> None:
    """Red team: the NUL became inbound_messages.key, PostgreSQL refused it (DataError), the
    message stayed first in new/ and every later run failed on it before the ones behind."""
    ann = contact(pg, "ann@example.com")
    box = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1000.poison").write_bytes(POISON)
    (box / "new" / "2000.ann").write_bytes(
        mailto_unsubscribe(pg, "ann@example.com", ann, "<u1@example.com>")
    )

    tally = poll_maildir(pg.sessions, pg.settings, pg.signer, box)

    assert tally.counts == {"ignored": 1, "applied": 1}
    assert reasons(pg, ann) == ["unsubscribe"]
    assert list((box / "new").iterdir()) == []
    poison_key = keys(pg)[0]
    assert poison_key.startswith("mid-sha256:") and len(poison_key) == len("mid-sha256:") + 64
    # Read again (the same mail redelivered): the hashed key still makes it a duplicate.
    (box / "new" / "3000.again").write_bytes(POISON)
    assert poll_maildir(pg.sessions, pg.settings, pg.signer, box).counts == {"duplicate": 1}


def test_one_spooled_message_with_a_nul_message_id_does_not_block_later_unsubscribes(
    pg: Pg,
) -> None:
    """Red team: spooled while the database was away, the same message made every drain fail
    first on it, so no unsubscribe spooled after it on that host was ever applied."""
    ann = contact(pg, "ann@example.com")
    poison = (
        b"From: someone@example.net\r\nTo: unsubscribe@killertracks.com\r\n"
        b"Subject: unsubscribe\r\nMessage-ID: =?utf-8?q?a=00b?=\r\n\r\nplease\r\n"
    )
    # What the receiver and the web app write while the database is away, in order.
    spool.write(pg.settings.spool, "mailto", {"envelope": ["unsubscribe@killertracks.com"]}, poison)
    token = pg.signer.sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)
    spool.write(pg.settings.spool, "one_click", {"token": token, "ip": None, "user_agent": ""})

    applied = spool.drain(
        pg.settings.spool,
        lambda payload, body: apply_spooled(pg.sessions, pg.settings, pg.signer, payload, body),
    )

    assert applied == 2 and spool.pending(pg.settings.spool) == 0
    assert reasons(pg, ann) == ["unsubscribe"]


def test_header_text_with_nul_or_stray_bytes_is_stored_and_a_matched_bounce_still_applies(
    pg: Pg, tmp_path: Path
) -> None:
    """Every other way a header's text reaches PostgreSQL: a raw NUL byte in the Message-ID,
    8-bit bytes in it, one too long for the column, and a DSN of ours (valid VERP tag)
    whose Status and Final-Recipient carry a NUL, which end up in the suppression's note
    and the row's detail."""
    with session_scope(pg.sessions) as session:
        campaign = sent_campaign(session, "gone@example.org")
        delivery = delivery_of(session, campaign, "gone@example.org")
        verp = returnpath.verp_address(pg.signer, pg.settings.return_path, delivery.id)
        gone = delivery.address_id
    box = tmp_path / "Maildir"
    (box / "new").mkdir(parents=True)
    plain = b"From: x@example.net\r\nSubject: hello\r\nMessage-ID: %s\r\n\r\nhi\r\n"
    (box / "new" / "1.raw-nul").write_bytes(plain % b"<a\x00b@example.net>")
    (box / "new" / "2.8bit").write_bytes(plain % b"<a\xff\xfeb@example.net>")
    (box / "new" / "3.long").write_bytes(plain % (b"<" + b"a" * 400 + b"@example.net>"))
    (box / "new" / "4.dsn").write_bytes(
        dsn(verp, "gone\x00@example.org", status="5.1.1\x00", mid="<dsn\x00@mx.example>")
    )

    tally = poll_maildir(pg.sessions, pg.settings, pg.signer, box)

    assert tally.counts == {"ignored": 3, "applied": 1}
    assert reasons(pg, gone) == ["hard_bounce"]
    assert all(k.startswith("mid-sha256:") for k in keys(pg))
    with session_scope(pg.sessions) as session:
        note = session.scalar(select(Suppression.note).where(Suppression.address_id == gone))
        assert note is not None and "\x00" not in note and "5.1.1" in note


def test_the_imap_poll_gets_past_a_mail_with_a_nul_message_id(
    pg: Pg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same poison in an IMAP mailbox (it had the lowest UID, so every run stopped at it)."""
    ann = contact(pg, "ann@example.com")
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    imap = ImapServer(cert, key, user="bounces@killertracks.com", password="pw").start()
    try:
        imap.deliver("INBOX", POISON)
        imap.deliver("INBOX", mailto_unsubscribe(pg, "ann@example.com", ann, "<u2@example.com>"))

        tally = poll_imap(pg.sessions, pg.settings, pg.signer, imap.url())

        assert tally.counts == {"ignored": 1, "applied": 1}
        assert reasons(pg, ann) == ["unsubscribe"]
        assert imap.folder("INBOX").uids() == []
        assert len(imap.folder("Processed").messages) == 2
    finally:
        imap.stop()
