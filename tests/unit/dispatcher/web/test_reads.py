"""The link pages' reads on the pool's own DBAPI connection (``dispatcher.db.page_reads``)
read exactly what the same statements read through a session."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import PageReads, Prebuilt, page_reads, session_scope
from dispatcher.settings import Settings
from dispatcher.web.reads import read_link, read_preferences
from dispatcher.web.standing import standing
from suppression.models import Reason
from suppression.suppressions import add_suppression
from suppression.tokens import BadToken, LinkPurpose, LinkSubject
from tests.factories import make_contact
from tests.unit.dispatcher.web.pages import link


def both_ways(engine: Engine, sessions: sessionmaker[Session], subject: LinkSubject) -> tuple:
    with session_scope(sessions) as session:
        through_session = (read_link(session, subject), standing(session, subject.address_id))
    with page_reads(engine) as reads:
        direct = (read_link(reads, subject), standing(reads, subject.address_id))
        # The preference page's one statement reads both.
        assert read_preferences(reads, subject) == direct
    return through_session, direct


def test_a_page_reads_what_a_session_reads(engine: Engine, session_factory) -> None:
    with session_scope(session_factory) as session:
        address_id = make_contact(session, "page.reads@example.com").address_id
        add_suppression(session, address_id, scope="global", reason=Reason.COMPLAINT, source="t")
        add_suppression(
            session, address_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="t"
        )
    through_session, direct = both_ways(engine, session_factory, LinkSubject(address_id, None))
    assert direct == through_session
    link, now = direct
    assert (link.address, link.unsubscribed, now.receives_marketing) == (
        "page.reads@example.com",
        True,
        False,
    )
    assert now.stopped is not None and now.stopped.since.tzinfo is not None


def test_an_address_that_is_gone_is_a_bad_link(engine: Engine) -> None:
    with pytest.raises(BadToken), page_reads(engine) as reads:
        read_link(reads, LinkSubject(999_999, None))
    with pytest.raises(BadToken), page_reads(engine) as reads:
        read_preferences(reads, LinkSubject(999_999, None))


def test_a_preference_page_view_is_one_read(
    client: FlaskClient,
    settings: Settings,
    contact_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scanner's GET of a preference link is one statement, as an unsubscribe page's is."""
    seen: list[str] = []
    real = PageReads.rows

    def counted(reads: PageReads, read: Prebuilt, params: dict) -> list:
        seen.append(read.compiled(reads.dialect).sql)
        return real(reads, read, params)

    monkeypatch.setattr(PageReads, "rows", counted)
    response = client.get(link(settings, LinkPurpose.PREFERENCES, contact_id))
    assert response.status_code == 200
    assert 'id="state-marketing">Marketing e-mail: <strong>yes' in response.data.decode()
    assert len(seen) == 1
