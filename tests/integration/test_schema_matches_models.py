"""The migrations build the schema the models describe, on both backends.

The code reads and writes through the models (``suppression/models.py``,
``dispatcher/models.py``) while every database is made by the migrations: a column, index,
constraint or default added to one and not the other would only show when a statement
relying on it met a real database. Alembic's comparison of a migrated database against the
models finds such a difference; this test requires that there is none.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import dispatcher.models  # noqa: F401  (registers every table on the metadata)
from dispatcher.db import alembic_config, make_engine
from suppression.models import Base


def test_a_migrated_database_has_what_the_models_declare(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "head")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            context = MigrationContext.configure(
                connection,
                opts={
                    # SQLite's column types are affinities (BIGINT and INTEGER, FLOAT and
                    # DOUBLE are one): PostgreSQL's run compares the types.
                    "compare_type": postgres,
                    "compare_server_default": postgres,
                },
            )
            differences: list[Any] = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "\n".join(map(str, differences))
