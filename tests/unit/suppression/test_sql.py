from __future__ import annotations

import pytest
from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from suppression.sql import compiled, numbered


def test_psycopgs_placeholders_are_numbered_once_per_name() -> None:
    sql = "SELECT %(a)s, %(b)s, %(a)s WHERE x LIKE 'staff_%%'"
    assert numbered(sql) == ("SELECT $1, $2, $1 WHERE x LIKE 'staff_%'", ("a", "b"))


def test_a_lone_percent_sign_is_refused() -> None:
    with pytest.raises(ValueError, match="lone %"):
        numbered("SELECT 5 % 3")


def test_a_statement_compiled_for_psycopg_binds_in_the_order_of_its_numbers() -> None:
    statement = select(
        bindparam("second", type_=None) + literal_column("1"),
        bindparam("first"),
        bindparam("second"),
    )
    made = compiled(statement, pg_dialect.dialect())
    assert "%(" not in made.sql and "$1" in made.sql
    assert made.positional_order is not None
    assert made.bind({"first": 1, "second": 2}) == tuple(
        {"first": 1, "second": 2}[name] for name in made.positional_order
    )
    assert made.positional_order[0] == "second"
