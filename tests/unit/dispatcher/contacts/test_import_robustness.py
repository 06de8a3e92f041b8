"""Bad input never crashes an import and never loses the good rows (issue 17).

NUL bytes, fields over the size limit, bytes that are not UTF-8 and control characters are
reported on their row, with the line where the row starts, like any invalid row; the other rows
go in, and nothing is half-committed. What the csv module cannot read on from (a quote never
closed) refuses the file: text inside a quoted field never becomes a row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.csvread import READ_LIMIT
from dispatcher.contacts.importer import ImportFileError, ImportReport, import_contacts
from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from suppression.models import Address
from tests.unit.dispatcher.contacts.test_contacts import states

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
    assert [(e.line, e.field) for e in report.errors] == [(3, "genre")]
    assert "is longer than 131,072 characters" in report.errors[0].reason
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
        (3, "(row)"),
        (5, "genre"),
        (5, "(row)"),
        (8, "email"),
        (9, "first_name"),
    ]
    assert "runs over lines 5–7" in report.errors[3].reason
    assert imported(session_factory) == {"good1@example.com", "good2@example.com"}


def test_bad_bytes_deep_in_a_large_file_are_named_on_their_own_line(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    rows = [f"p{i}@example.com,P{i},yes,,\n".encode() for i in range(3000)]
    rows[2500] = b"p2500@example.com,Bj\xf6rn,yes,,\n"  # line 2502
    report = run(session_factory, tmp_path, b"".join(rows))
    assert [(e.line, e.field) for e in report.errors] == [(2502, "first_name")]
    assert len(imported(session_factory)) == 2999


def test_text_inside_an_oversized_quoted_field_never_becomes_a_row(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Red team: past the csv module's default limit, reading resumed on the next line, still
    inside the quotes, so whoever writes a long note into a CRM could add rows (an opt-in for
    an address that never gave one). The note is read whole and its row refused by field."""
    path = tmp_path / "c.csv"
    path.write_text(
        "email,marketing_consent,notes\n"
        'mallory@example.net,no,"' + "x" * 140_000 + "\n"
        "victim@example.org,yes,\n"
        'end of the note"\n'
        "bob@example.com,no,hi\n",
        encoding="utf-8",
    )
    report = import_contacts(session_factory, path, source="crm")
    assert ("victim@example.org", "marketing") not in states(session_factory)
    assert [(e.line, e.field) for e in report.errors] == [(2, "notes"), (2, "(row)")]
    assert "longer than 131,072 characters" in report.errors[0].reason
    assert "lines 2–4" in report.errors[1].reason
    assert states(session_factory) == {("bob@example.com", "marketing"): "opted_out"}


def test_a_field_past_what_the_reader_holds_refuses_the_file(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Beyond READ_LIMIT the reader cannot tell where the next row starts: nothing goes in."""
    path = tmp_path / "c.csv"
    path.write_bytes(
        HEADER + GOOD + b'big@example.com,"' + b"x" * (READ_LIMIT + 1) + b'",yes,,\n' + AFTER
    )
    with pytest.raises(ImportFileError, match=r"line 3: a field of this row runs past"):
        import_contacts(session_factory, path, source="test")
    assert imported(session_factory) == set()


def test_an_unterminated_quote_does_not_silently_swallow_the_opt_outs_after_it(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Red team: a quote never closed ran to the end of the file and the report named only its
    first line ("1 read, line 2: line break"); the opt-outs after it vanished unseen. Reading
    those lines as rows could turn a note's text into rows, so the file is refused, naming
    every line the quote covers, and nothing is imported."""
    path = tmp_path / "c.csv"
    path.write_text(
        "email,first_name,marketing_consent\n"
        "ann@example.com,Ann,no\n"
        'bob@example.com,"Bobby,yes\n'
        "carl@example.com,Carl,no\n"
        "dan@example.com,Dan,no\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportFileError, match="line 3: a quoted field .* never closed") as err:
        import_contacts(session_factory, path, source="t")
    assert "lines 3–5" in str(err.value)
    assert states(session_factory) == {}


def test_a_quote_closed_far_below_names_the_lines_its_row_took(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A stray quote closed by another one lines later makes one row of those lines: the
    report says which lines it took, so the rows inside are not lost unseen."""
    body = b'stray@example.com,"Ann,yes,,\n' + GOOD + b'x@example.com,Lee",yes,,\n' + AFTER
    report = run(session_factory, tmp_path, body)
    assert {(e.line, e.field) for e in report.errors} >= {(2, "(row)")}
    assert any("lines 2–4" in e.reason for e in report.errors)
    assert imported(session_factory) == {"good2@example.com"}


def test_a_carriage_return_outside_quotes_is_a_row_error(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The csv module refuses a bare CR outside quotes; it is not inside a quoted field then,
    so the row is reported and reading goes on with the next line."""
    report = run(session_factory, tmp_path, GOOD + b"cr@example.com,Ann\rLee,yes,,\n" + AFTER)
    assert [(e.line, e.field) for e in report.errors] == [(3, "(row)")]
    assert "carriage return" in report.errors[0].reason
    assert imported(session_factory) == {"good1@example.com", "good2@example.com"}
