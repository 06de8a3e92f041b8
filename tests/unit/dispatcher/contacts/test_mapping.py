"""Column mapping and presets: the exports people bring import as they should."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.audience import audience_filter
from dispatcher.contacts.importer import ImportFileError, import_contacts
from dispatcher.contacts.mapping import attribute_name, go_time
from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from suppression.models import Address, Consent, ConsentState


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def contact(factory: sessionmaker[Session], address: str) -> tuple[Contact, dict[str, str]]:
    with session_scope(factory) as session:
        found = session.scalars(
            select(Contact)
            .join(Address, Address.id == Contact.address_id)
            .where(Address.address == address)
        ).one()
        states = dict(
            session.execute(
                select(ConsentState.scope, ConsentState.status).where(
                    ConsentState.address_id == found.address_id
                )
            ).all()
        )
        session.expunge(found)
        return found, states


def test_map_renames_columns_and_other_columns_become_usable_attributes(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = write(
        tmp_path,
        "Email Address,First Name,Opt In,When,Phone Number,Fax\n"
        "ann@example.com,Ann,yes,2015-01-01,555-0100,555-0199\n",
    )
    report = import_contacts(
        session_factory,
        path,
        source="t",
        mapping="Email Address=email,First Name=first_name,Opt In=marketing_consent,"
        "When=consent_at,Fax=-",
    )
    assert report.errors == [] and report.created == 1
    ann, states = contact(session_factory, "ann@example.com")
    assert ann.first_name == "Ann" and states == {"marketing": "opted_in"}
    assert ann.attributes == {"Phone_Number": "555-0100"}
    with session_scope(session_factory) as session:
        chosen = session.scalars(
            select(Contact.id).where(audience_filter("Phone_Number=555-0100"))
        ).all()
    assert chosen == [ann.id]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("Nope=email", "does not have: Nope"),
        ("mail=email,other=email", "both be email"),
        ("mail=email,other=not a name!", "neither one of"),
        ("mail", "is not COLUMN=FIELD"),
    ],
)
def test_a_bad_map_imports_nothing(
    tmp_path: Path, session_factory: sessionmaker[Session], mapping: str, message: str
) -> None:
    path = write(tmp_path, "mail,other\nann@example.com,x\n")
    with pytest.raises(ImportFileError, match=message):
        import_contacts(session_factory, path, source="t", mapping=mapping)


def test_attribute_names_are_what_an_audience_accepts() -> None:
    assert attribute_name("Phone Number") == "Phone_Number"
    assert attribute_name("2nd genre") == "_2nd_genre"
    assert attribute_name("MEMBER RATING", lower=True) == "member_rating"
    assert attribute_name("???") is None
    assert go_time("2024-01-15 10:20:30.123456789 +0530 IST") == "2024-01-15T10:20:30.123456+05:30"


MAILCHIMP_COLUMNS = (
    '"Email Address","First Name","Last Name",Genre,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
    "CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
    "LAST_CHANGED,LEID,EUID,NOTES,TAGS"
)


def test_mailchimp_subscribed_then_unsubscribed_exports(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    subscribed = write(
        tmp_path,
        MAILCHIMP_COLUMNS + "\n"
        "ann@example.com,Ann,Lee,Jazz,4,2019-03-01 10:00:00,203.0.113.9,"
        "2019-03-01 10:05:00,203.0.113.9,59.9,10.7,1,0,Europe/Oslo,NO,03,2019-03-02 00:00:00,"
        '1,abc,,"""Customer"",""Jazz fan"""\n',
        "subscribed.csv",
    )
    report = import_contacts(session_factory, subscribed, source="mc", preset="mailchimp")
    assert report.errors == [] and report.created == 1
    ann, states = contact(session_factory, "ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")
    assert ann.attributes == {"genre": "Jazz"}  # tracking columns (IPs, location) left out
    assert states == {"marketing": "opted_in"}
    with session_scope(session_factory) as session:
        assert set(session.scalars(select(ContactTag.tag))) == {"customer", "jazz fan"}
        ledger = session.scalars(select(Consent)).one()
        assert ledger.source == "mailchimp:subscribed"
        assert ledger.occurred_at.isoformat() == "2019-03-01T10:05:00+00:00"
    unsubscribed = write(
        tmp_path,
        MAILCHIMP_COLUMNS + ",UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,"
        "UNSUB_REASON_OTHER\n"
        "ann@example.com,Ann,Lee,Jazz,4,2019-03-01 10:00:00,,2019-03-01 10:05:00,,,,,,,,,"
        "2020-01-01 00:00:00,1,abc,,,2020-01-01 09:00:00,News,x1,NORMAL,\n",
        "unsubscribed.csv",
    )
    import_contacts(session_factory, unsubscribed, source="mc", preset="mailchimp")
    assert contact(session_factory, "ann@example.com")[1] == {"marketing": "opted_out"}


def test_listmonk_export_with_json_attributes(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = write(
        tmp_path,
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        'u1,ann@example.com,Ann Marie Lee,"{""City"": ""Oslo"", ""plan"": {""tier"": 2}}",'
        "enabled,2021-05-01 10:00:00.123456 +0000 UTC,2021-05-02 10:00:00 +0000 UTC\n"
        "u2,bob@example.com,Bob,{},blocklisted,"
        "2021-05-01 10:00:00 +0000 UTC,2022-01-01 08:00:00 +0000 UTC\n"
        'u3,cat@example.com,Cat,"[1,2]",enabled,2021-05-01 10:00:00 +0000 UTC,\n',
    )
    report = import_contacts(session_factory, path, source="lm", preset="listmonk")
    assert [(e.line, e.field) for e in report.errors] == [(4, "attributes")]
    ann, states = contact(session_factory, "ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Marie Lee")
    assert ann.attributes == {"city": "Oslo", "plan": '{"tier": 2}'}
    assert states == {}  # enabled says nothing of her lists: never asked
    assert contact(session_factory, "bob@example.com")[1] == {"marketing": "opted_out"}


def test_listmonk_enabled_is_no_opt_in_and_a_list_status_column_is_read(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """A subscriber who left a list stays ``enabled`` in listmonk and its export does not show
    the list's status (knadh/listmonk#1609): ``enabled`` is not an opt-in, or that unsubscribe
    would become one. A per-list ``subscription_status`` column is read where a file has it:
    unsubscribed from any list is an opt-out as of the import, confirmed an opt-in dated when
    the subscription was made, unconfirmed (single or unconfirmed double opt-in) nothing."""
    header = (
        "uuid,email,name,attributes,status,created_at,updated_at,"
        "subscription_status,subscription_created_at,subscription_updated_at\n"
    )
    t = "2021-05-01 10:00:00 +0000 UTC"
    path = write(
        tmp_path,
        header + f"u1,ann@example.com,Ann,{{}},enabled,{t},{t},confirmed,{t},{t}\n"
        f"u1,ann@example.com,Ann,{{}},enabled,{t},{t},unsubscribed,{t},{t}\n"
        f"u2,bob@example.com,Bob,{{}},enabled,{t},{t},confirmed,{t},{t}\n"
        f"u3,cat@example.com,Cat,{{}},enabled,{t},{t},unconfirmed,{t},{t}\n"
        f"u4,dan@example.com,Dan,{{}},blocklisted,{t},{t},confirmed,{t},{t}\n"
        f"u5,eve@example.com,Eve,{{}},enabled,{t},{t},subscribed,{t},{t}\n",
    )
    report = import_contacts(session_factory, path, source="lm", preset="listmonk")
    assert [(e.line, e.field) for e in report.errors] == [(7, "subscription_status")]
    assert contact(session_factory, "ann@example.com")[1] == {"marketing": "opted_out"}
    assert contact(session_factory, "bob@example.com")[1] == {"marketing": "opted_in"}
    assert contact(session_factory, "cat@example.com")[1] == {}
    assert contact(session_factory, "dan@example.com")[1] == {"marketing": "opted_out"}
    with session_scope(session_factory) as session:
        ledger = session.execute(
            select(Address.address, Consent.status, Consent.dated, Consent.occurred_at)
            .join(Address, Address.id == Consent.address_id)
            .where(Address.address.in_(["ann@example.com", "bob@example.com"]))
        ).all()
    dated = {(a, status): (d, at.year) for a, status, d, at in ledger}
    assert dated[("bob@example.com", "opted_in")] == (True, 2021)
    assert dated[("ann@example.com", "opted_out")][0] is False  # as of the import


def test_mautic_export(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    path = write(
        tmp_path,
        "id,firstname,lastname,email,company,points,last_active,tags\n"
        "7,Ann,Lee,ann@example.com,Acme,12,2024-01-01 00:00:00,jazz|vip\n",
    )
    report = import_contacts(session_factory, path, source="mautic", preset="mautic")
    assert report.errors == []
    ann, states = contact(session_factory, "ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")
    assert ann.attributes == {"company": "Acme", "points": "12"}
    assert states == {}  # a Mautic export carries no consent: never asked
    with session_scope(session_factory) as session:
        assert set(session.scalars(select(ContactTag.tag))) == {"jazz", "vip"}
