"""Erasure finds the person's address in raw inbound reports on both backends: the search
runs in SQL (``lower`` of the raw bytes on SQLite, of their escaped form on PostgreSQL), so
it folds the case of ASCII letters only: the delivery form and the matching key, in any
ASCII case, are found."""

from __future__ import annotations

from alembic import command
from sqlalchemy import select

from dispatcher.db import alembic_config, make_engine, make_sessionmaker, session_scope
from dispatcher.models import InboundMessage
from dispatcher.privacy.erasure import erase_person
from suppression.tokens import TokenSigner
from tests.conftest import TEST_KEYS
from tests.factories import make_contact


def _report(key: str, raw: bytes) -> InboundMessage:
    return InboundMessage(
        key=key, source="file", kind="hard_bounce", outcome="unmatched", raw=raw, raw_size=9
    )


def test_raw_reports_naming_the_person_lose_their_raw_only(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "head")
    engine = make_engine(empty_database_url)
    try:
        sessions = make_sessionmaker(engine)
        with session_scope(sessions) as session:
            make_contact(session, "Jörg.Straße@Example.org")
            session.add_all(
                [
                    _report("a", b"\x00\xff\\ To: J\xc3\xb6rg.Stra\xc3\x9fe@EXAMPLE.org\r\n"),
                    _report("b", b"Final-Recipient: rfc822; J\xc3\xb6RG.STRASSE@example.ORG"),
                    _report("c", b"Final-Recipient: rfc822; jorg.strasse@example.org\\"),
                ]
            )
            unmatched = _report("d", b"")
            unmatched.detail = {"why": "5.1.1", "recipients": ["J\u00f6rg.STRASSE@example.org"]}
            session.add(unmatched)
        with session_scope(sessions) as session:
            signer = TokenSigner(TEST_KEYS.split(","))
            erase_person(session, signer, "jörg.strasse@example.org", reason="r", actor="dpo")
        with session_scope(sessions) as session:
            kept = dict(session.execute(select(InboundMessage.key, InboundMessage.raw)).all())
            detail = session.scalar(select(InboundMessage.detail).where(InboundMessage.key == "d"))
        assert kept["a"] is None and kept["b"] is None
        assert kept["c"] is not None  # another person (no ö)
        assert detail is not None and detail["recipients"] == [] and detail["erased"]
    finally:
        engine.dispose()
