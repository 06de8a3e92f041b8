"""The IMAP reader against a real IMAP server over TLS (tests/support/imap_server.py, in this
process), run through beat's task: what comes back reaches suppression once, each applied
message leaves the mailbox for the done folder, and a bad password or an untrusted server
is a clear error that changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.inbound.sources import InboundError
from dispatcher.models import Delivery, DeliveryStatus, InboundMessage
from dispatcher.settings import Settings
from suppression.models import Address, ConsentState, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.support.imap_server import ImapServer
from tests.support.smtp_sink import self_signed_certificate
from tests.unit.dispatcher.inbound.test_apply import delivery_of, dsn, sent_campaign
from tests.unit.dispatcher.inbound.test_sources import BROKEN, failing_on
from workers import runtime as runtime_module
from workers.tasks import read_inbound_mailboxes

CORPUS = Path(__file__).resolve().parents[3] / "data" / "inbound"
PASSWORD = "s3cret-Imap"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("imap-tls"))


def serve(certificate: tuple[Path, Path], **options: bool) -> Iterator[ImapServer]:
    server = ImapServer(
        *certificate, user="bounces@killertracks.com", password=PASSWORD, **options
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap(certificate: tuple[Path, Path]) -> Iterator[ImapServer]:
    yield from serve(certificate)


@dataclass
class Mail:
    bounce: bytes
    complaint: bytes
    unsubscribe: bytes
    forged: bytes
    read_by_a_person: bytes
    queued_id: int  # a queued delivery to the address that unsubscribes by mail

    def all(self) -> list[bytes]:
        return [self.bounce, self.complaint, self.unsubscribe, self.forged, self.read_by_a_person]


@pytest.fixture
def mail(settings: Settings, session_factory: sessionmaker[Session]) -> Mail:
    """Real reports about one sent campaign: a Postfix-style DSN to the VERP return path, a
    Yahoo ARF complaint naming our Message-ID, a mailto unsubscribe carrying the recipient's
    token, a forged bounce naming someone without our tag, and a second DSN a person had
    already opened in a mail client (flagged seen)."""
    signer = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        sent = sent_campaign(
            session, "gone@example.org", "kim@yahoo.example", "full@example.org", "al@example.org"
        )
        later = sent_campaign(session, status="sending")
        session.execute(
            Delivery.__table__.update()
            .where(Delivery.campaign_id == later.id)
            .values(status=DeliveryStatus.QUEUED.value)
        )
        gone = delivery_of(session, sent, "gone@example.org")
        kim = delivery_of(session, sent, "kim@yahoo.example")
        full = delivery_of(session, sent, "full@example.org")
        queued = delivery_of(session, later, "al@example.org")
        mid = returnpath.message_id(
            signer, sent.id, kim.contact_id, "killertracks.com", sent.message_nonce
        )
        token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, queued.address_id, sent.id)
        return Mail(
            bounce=dsn(
                returnpath.verp_address(signer, settings.return_path, gone.id),
                "gone@example.org",
                mid="<dsn-1@mx.example>",
            ),
            complaint=(CORPUS / "local" / "arf_yahoo.eml")
            .read_bytes()
            .replace(b"<c1.r1@killertracks.com>", mid.encode()),
            unsubscribe=(
                "From: Al <al@example.org>\r\nTo: unsubscribe@killertracks.com\r\n"
                f"Subject: unsubscribe {token}\r\nMessage-ID: <u-1@example.org>\r\n\r\n"
            ).encode(),
            forged=dsn("bounces@killertracks.com", "al@example.org", mid="<forged@evil>"),
            read_by_a_person=dsn(
                returnpath.verp_address(signer, settings.return_path, full.id),
                "full@example.org",
                mid="<dsn-2@mx.example>",
            ),
            queued_id=queued.id,
        )


def read(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    url: str,
    trust: Path | None,
    **extra: str,
) -> dict[str, int]:
    """Run beat's task once with the IMAP URL configured (and the test CA trusted)."""
    monkeypatch.setenv("DISPATCHER_HOME", str(settings.home))
    monkeypatch.setenv("DISPATCHER_SECRET_KEYS", ",".join(settings.secret_keys))
    monkeypatch.setenv("DISPATCHER_INBOUND_IMAP_URL", url)
    for name, value in extra.items():
        monkeypatch.setenv(f"DISPATCHER_{name.upper()}", value)
    if trust is None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    monkeypatch.setattr(runtime_module, "_runtime", None)
    try:
        return read_inbound_mailboxes()
    finally:
        runtime_module.runtime().engine.dispose()
        monkeypatch.setattr(runtime_module, "_runtime", None)


@dataclass(frozen=True)
class State:
    suppressions: list[tuple[str, str, str]]  # (address, reason, scope), active
    feedback: dict[str, str | None]  # address → what came back about its sent message
    inbound: dict[str, int]  # outcome → rows
    marketing: dict[str, str]  # address → consent
    queued_status: str


def state(sessions: sessionmaker[Session], queued_id: int) -> State:
    with session_scope(sessions) as session:
        suppressions = sorted(
            (a, r, s)
            for a, r, s in session.execute(
                select(Address.address, Suppression.reason, Suppression.scope)
                .join(Address, Address.id == Suppression.address_id)
                .where(Suppression.lifted_at.is_(None))
            )
        )
        feedback = {
            a: f
            for a, f in session.execute(
                select(Address.address, Delivery.feedback)
                .join(Address, Address.id == Delivery.address_id)
                .where(Delivery.status == DeliveryStatus.SENT.value)
            )
        }
        inbound = dict(
            session.execute(
                select(InboundMessage.outcome, func.count()).group_by(InboundMessage.outcome)
            ).all()
        )
        marketing = {
            a: s
            for a, s in session.execute(
                select(Address.address, ConsentState.status)
                .join(Address, Address.id == ConsentState.address_id)
                .where(ConsentState.scope == "marketing")
            )
        }
        queued = session.get(Delivery, queued_id)
        assert queued is not None
        return State(suppressions, feedback, inbound, marketing, queued.status)


def put(server: ImapServer, mail: Mail) -> list[int]:
    uids = [server.deliver("INBOX", raw) for raw in mail.all()[:-1]]
    return uids + [server.deliver("INBOX", mail.read_by_a_person, {"\\Seen"})]


EXPECTED_SUPPRESSIONS = [
    ("al@example.org", "unsubscribe", "marketing"),
    ("full@example.org", "hard_bounce", "global"),
    ("gone@example.org", "hard_bounce", "global"),
    ("kim@yahoo.example", "complaint", "global"),
]


@pytest.mark.parametrize(
    "server_offers",
    ["MOVE", "COPY and UID EXPUNGE", "COPY and EXPUNGE"],
)
def test_reports_in_the_mailbox_reach_suppression_once_and_move_to_the_done_folder(
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
    server_offers: str,
) -> None:
    options = {
        "MOVE": {},
        "COPY and UID EXPUNGE": {"offer_move": False},
        "COPY and EXPUNGE": {"offer_move": False, "offer_uidplus": False},
    }[server_offers]
    servers = serve(certificate, **options)
    imap = next(servers)
    put(imap, mail)

    tally = read(monkeypatch, settings, imap.url(), certificate[0])

    assert tally == {"applied": 4, "unmatched": 1}
    after = state(session_factory, mail.queued_id)
    assert after.suppressions == EXPECTED_SUPPRESSIONS
    assert after.feedback == {
        "gone@example.org": "hard_bounce",
        "kim@yahoo.example": "complaint",
        "full@example.org": "hard_bounce",
        "al@example.org": None,
    }
    assert after.marketing["al@example.org"] == "opted_out"
    assert after.queued_status == "cancelled"  # the mailto unsubscribe stopped queued mail
    # Every message, the forged one and the one a person had read included, left the inbox
    # for the done folder (created by the reader), flags kept, none marked deleted there.
    assert imap.folder("INBOX").uids() == []
    done = imap.folder("Processed").messages
    assert [m.data for m in done] == [imap_form(raw) for raw in mail.all()]
    assert [m.flags for m in done] == [set(), set(), set(), set(), {"\\Seen"}]
    # Bodies were read with BODY.PEEK (the server saw no plain FETCH of a body).
    moved = {"MOVE": "UID MOVE", "COPY and UID EXPUNGE": "UID EXPUNGE"}.get(server_offers)
    assert moved is None or imap.commands.count(moved) == 5
    if server_offers == "COPY and EXPUNGE":
        assert imap.commands.count("EXPUNGE") == 5

    # The same reports again (a replayed mailbox, a second reader): nothing applied twice.
    put(imap, mail)
    assert read(monkeypatch, settings, imap.url(), certificate[0]) == {"duplicate": 5}
    assert state(session_factory, mail.queued_id) == after
    assert imap.folder("INBOX").uids() == [] and len(imap.folder("Processed").messages) == 10
    # An empty mailbox: nothing to do.
    assert read(monkeypatch, settings, imap.url(), certificate[0]) == {}
    servers.close()


def imap_form(raw: bytes) -> bytes:
    import re

    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def test_a_connection_lost_after_a_commit_applies_nothing_twice(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(imap, mail)
    imap.cut_on["UID MOVE"] = 1  # the first message is applied, then the line drops

    with pytest.raises(InboundError, match="failed while reading from"):
        read(monkeypatch, settings, imap.url(), certificate[0])
    assert state(session_factory, mail.queued_id).inbound == {"applied": 1}
    assert len(imap.folder("INBOX").uids()) == 5  # nothing moved: all still to do

    assert read(monkeypatch, settings, imap.url(), certificate[0]) == {
        "duplicate": 1,
        "applied": 3,
        "unmatched": 1,
    }
    assert state(session_factory, mail.queued_id).suppressions == EXPECTED_SUPPRESSIONS
    assert imap.folder("INBOX").uids() == []


def test_a_message_over_the_size_limit_is_recorded_from_its_header_alone(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = b"From: x@example.net\r\nMessage-ID: <big@example.net>\r\nSubject: big\r\n\r\n"
    imap.deliver("INBOX", big + b"y" * 5000 + b"\r\n")

    tally = read(monkeypatch, settings, imap.url(), certificate[0], inbound_max_bytes="2048")

    assert tally == {"ignored": 1}
    assert "UID FETCH" in imap.commands and imap.folder("INBOX").uids() == []
    with session_scope(session_factory) as session:
        row = session.scalars(select(InboundMessage)).one()
        assert (row.key, row.raw_size) == ("mid:<big@example.net>", len(big))


def nothing_changed(
    imap: ImapServer, sessions: sessionmaker[Session], mail: Mail, uids: list[int]
) -> None:
    assert state(sessions, mail.queued_id).inbound == {}
    assert state(sessions, mail.queued_id).suppressions == []
    assert imap.folder("INBOX").uids() == uids
    assert [imap.flags("INBOX", uid) for uid in uids[:-1]] == [set()] * (len(uids) - 1)
    assert "Processed" not in imap.folders


def test_a_wrong_password_is_a_clear_error_and_changes_nothing(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = put(imap, mail)

    with pytest.raises(InboundError) as refused:
        read(monkeypatch, settings, imap.url(password="wrong"), certificate[0])

    message = str(refused.value)
    assert message == (
        f"IMAP 127.0.0.1:{imap.port}: the user name or password in inbound_imap_url was refused"
    )
    assert "wrong" not in message and "bounces@" not in message
    assert imap.logins == [False]
    nothing_changed(imap, session_factory, mail, uids)


@pytest.mark.parametrize("fault", ["certificate not trusted", "server speaks no TLS"])
def test_a_tls_failure_is_a_clear_error_and_nothing_is_sent_or_changed(
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    servers = serve(certificate, **({"tls": False} if fault == "server speaks no TLS" else {}))
    imap = next(servers)
    uids = put(imap, mail)
    trust = None if fault == "certificate not trusted" else certificate[0]

    with pytest.raises(InboundError) as failed:
        read(monkeypatch, settings, imap.url(), trust)

    assert str(failed.value).startswith(f"IMAP 127.0.0.1:{imap.port}: TLS failed (")
    assert "nothing was read" in str(failed.value) and PASSWORD not in str(failed.value)
    if fault == "certificate not trusted":
        assert "certificate verify failed" in str(failed.value)
    assert imap.logins == []  # the password never went over the line
    nothing_changed(imap, session_factory, mail, uids)
    servers.close()


def test_a_mailbox_that_does_not_exist_is_named(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InboundError, match="NONEXISTENT"):
        read(monkeypatch, settings, imap.url("Bounces"), certificate[0])


def test_a_message_that_fails_is_flagged_and_moved_on_and_the_rest_are_applied(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It had the lowest UID: were it left in the mailbox, every run would stop at it."""
    first = imap.deliver("INBOX", BROKEN)
    put(imap, mail)
    failing_on(monkeypatch, b"X-Break", ValueError("cannot store mallory@example.net"))

    tally = read(monkeypatch, settings, imap.url(), certificate[0])

    assert tally == {"failed": 1, "applied": 4, "unmatched": 1}
    assert state(session_factory, mail.queued_id).suppressions == EXPECTED_SUPPRESSIONS
    assert imap.folder("INBOX").uids() == []
    done = imap.folder("Processed").messages
    assert [m.data for m in done] == [imap_form(BROKEN)] + [imap_form(r) for r in mail.all()]
    assert [m.flags for m in done] == [{"\\Flagged"}, set(), set(), set(), set(), {"\\Seen"}]
    lines = [r.getMessage() for r in caplog.records if r.name == "dispatcher.inbound.sources"]
    assert lines == [f"inbound imap: message UID {first} set aside (processing failed: ValueError)"]


def test_with_the_database_away_every_message_stays_in_the_mailbox(
    imap: ImapServer,
    certificate: tuple[Path, Path],
    settings: Settings,
    session_factory: sessionmaker[Session],
    mail: Mail,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = put(imap, mail)
    failing_on(monkeypatch, b"", OperationalError("SELECT 1", {}, Exception("refused")))

    with pytest.raises(OperationalError):
        read(monkeypatch, settings, imap.url(), certificate[0])

    assert imap.folder("INBOX").uids() == uids
    assert imap.folder("Processed").messages == []
    assert state(session_factory, mail.queued_id).inbound == {}
