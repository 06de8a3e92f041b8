"""Audience expressions, evaluated in SQL on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from dispatcher.campaigns.audience import AudienceError, audience_filter, validate_audience
from dispatcher.db import make_engine, make_sessionmaker, upgrade
from dispatcher.models import Contact, ContactTag
from suppression.models import Address
from tests.conftest import settings_for
from tests.factories import make_contact
from tests.support.backends import postgres_database, require


@pytest.fixture(scope="module")
def pg_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated PostgreSQL database for this module, dropped at its end."""
    require("postgresql")
    with postgres_database() as url:
        upgrade(settings_for(tmp_path_factory.mktemp("pg"), database_url=url))
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_session(request: pytest.FixtureRequest) -> Iterator[Session]:
    """A session on a migrated database of each backend, rolled back afterwards."""
    if request.param == "sqlite":
        session: Session = request.getfixturevalue("session")
        yield session
        return
    engine: Engine = request.getfixturevalue("pg_engine")
    with make_sessionmaker(engine)() as pg_session:
        pg_session.begin()
        yield pg_session
        pg_session.rollback()


def _people(session: Session) -> None:
    people = {
        "ann@example.com": ({"genre": "Jazz", "customer_type": "agency"}, ["jazz"]),
        "bob@example.com": ({"genre": "rock"}, ["rock", "vip"]),
        "cy@example.com": ({}, ["jazz", "rock"]),
        "dee@example.com": ({"genre": "blues", "customer_type": "freelance"}, []),
    }
    for address, (attributes, tags) in people.items():
        contact = make_contact(session, address, attributes=attributes)
        session.add_all(ContactTag(contact_id=contact.id, tag=t) for t in tags)
    session.flush()


def _who(session: Session, expression: str | None) -> set[str]:
    stmt = (
        select(Address.address)
        .join(Contact, Contact.address_id == Address.id)
        .where(audience_filter(expression))
    )
    return {a.split("@")[0] for a in session.scalars(stmt)}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (None, {"ann", "bob", "cy", "dee"}),
        ("", {"ann", "bob", "cy", "dee"}),
        ("  ", {"ann", "bob", "cy", "dee"}),
        ("tag:jazz", {"ann", "cy"}),
        ("tag:JAZZ", {"ann", "cy"}),
        ("tag:jazz,tag:rock", {"cy"}),
        ("tag:jazz|tag:vip", {"ann", "bob", "cy"}),
        ("genre=jazz", {"ann"}),
        ("genre = JAZZ", {"ann"}),
        ("genre!=jazz", {"bob", "cy", "dee"}),  # no genre at all counts as "not jazz"
        ("genre=jazz|genre=blues", {"ann", "dee"}),
        ("tag:rock,genre!=rock", {"cy"}),
        ("customer_type=agency|tag:vip, genre!=blues", {"ann", "bob"}),
        ("tag:nobody", set()),
        ("mood=calm", set()),
    ],
)
def test_expressions_select_the_right_contacts(
    any_session: Session, expression: str | None, expected: set[str]
) -> None:
    _people(any_session)
    assert _who(any_session, expression) == expected


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("genre", "not understood"),
        ("tag:", "tag name is missing"),
        ("genre=", "value is missing"),
        ("tag:jazz,,tag:rock", "empty term"),
        ("tag:jazz,", "empty term"),
        ("bad key=1", "'bad key' is not an attribute name"),
        ("$.x=1", "not an attribute name"),
    ],
)
def test_bad_expressions_are_refused_with_the_term_named(expression: str, fragment: str) -> None:
    with pytest.raises(AudienceError, match=fragment.replace("$", r"\$").replace(".", r"\.")):
        validate_audience(expression)
    assert issubclass(AudienceError, ValueError)


def test_values_are_bound_parameters_not_sql(session: Session) -> None:
    _people(session)
    assert _who(session, "genre=x' OR '1'='1") == set()
