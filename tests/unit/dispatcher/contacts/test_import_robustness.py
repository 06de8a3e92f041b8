"""Bad input never crashes an import and never loses the good rows (issue 17).

NUL bytes, fields over the csv module's size limit, bytes that are not UTF-8 and control
characters are reported on their row, with the line where the row starts, like any invalid
row; the other rows go in, and nothing is half-committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import ImportReport, import_contacts
from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from suppression.models import Address

HEADER = b"email,first_name,marketing_consent,tags,genre\n"


def run(factory: sessionmaker[Session], tmp_path: Path, body: bytes) -> ImportReport:
    path = tmp_path / "c.csv"
    path.write_bytes(HEADER + body)
    return import_contacts(factory, path, source="test", chunk_size=2)


def imported(factory: sessionmaker[Session]) -> set[str]:
    with session_scope(factory) as session:
        return set(
            session.scalars(select(Address.address).join(Contact, Contact.address_id == Address.id))
        )


GOOD = b"good1@example.com,Ann,yes,jazz,jazz\n"
AFTER = b"good2@example.com,Bob,yes,rock,rock\n"


@pytest.mark.parametrize(
    ("bad_row", "field", "reason"),
    [
        (b"nul@example.com,An\x00n,yes,,\n", "first_name", "contains a NUL byte"),
        (b"nul@example.com,Ann,yes,ja\x00zz,\n", "tags", "contains a NUL byte"),
        (b"nul@example.com,Ann,yes,,ja\x00zz\n", "genre", "contains a NUL byte"),
        (b"latin@example.com,J\xf6rg,yes,,\n", "first_name", "is not UTF-8 text"),
        (b"bell@example.com,Ann\x07,yes,,\n", "first_name", "control character U+0007"),
        (b"esc@example.com,\x1b[31mAnn,yes,,\n", "first_name", "control character U+001B"),
        (b"tab@example.com,Ann,yes,,jazz\tfunk\n", "genre", "control character U+0009"),
        ("ls@example.com,Ann\u2028Lee,yes,,\n".encode(), "first_name", "line break"),
    ],
)
def test_a_bad_field_is_a_row_error_and_the_other_rows_go_in(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    bad_row: bytes,
    field: str,
    reason: str,
) -> None:
    report = run(session_factory, tmp_path, GOOD + bad_row + AFTER)
    assert [(e.line, e.field) for e in report.errors] == [(3, field)]
    assert reason in report.errors[0].reason
    assert imported(session_factory) == {"good1@example.com", "good2@example.com"}
    with session_scope(session_factory) as session:
        assert set(session.scalars(select(ContactTag.tag))) == {"jazz", "rock"}


def test_a_field_over_the_csv_limit_is_a_row_error(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    huge = b"big@example.com,Ann,yes,," + b"x" * 140_000 + b"\n"
    report = run(session_factory, tmp_path, GOOD + huge + AFTER)
    assert [e.line for e in report.errors] == [3]
    assert "field larger than field limit" in report.errors[0].reason
    assert imported(session_factory) == {"good1@example.com", "good2@example.com"}


def test_line_numbers_count_from_where_a_multi_line_row_starts(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    body = (
        GOOD  # line 2
        + b'multi@example.com,"Ann\nLee",yes,,\n'  # lines 3-4: a name with a line break
        + b'ok@example.com,Cat,yes,,"long\nnote\nhere"\n'  # lines 5-7: an attribute, refused
        + b"not-an-address,Dee,yes,,\n"  # line 8
        + b"bad@example.com,\xff\xfe,yes,,\n"  # line 9
        + b"\n"  # line 10, blank
        + AFTER  # line 11
    )
    report = run(session_factory, tmp_path, body)
    assert [(e.line, e.field) for e in report.errors] == [
        (3, "first_name"),
        (5, "genre"),
        (8, "email"),
        (9, "first_name"),
    ]
    assert imported(session_factory) == {"good1@example.com", "good2@example.com"}


def test_bad_bytes_deep_in_a_large_file_are_named_on_their_own_line(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    rows = [f"p{i}@example.com,P{i},yes,,\n".encode() for i in range(3000)]
    rows[2500] = b"p2500@example.com,Bj\xf6rn,yes,,\n"  # line 2502
    report = run(session_factory, tmp_path, b"".join(rows))
    assert [(e.line, e.field) for e in report.errors] == [(2502, "first_name")]
    assert len(imported(session_factory)) == 2999
