"""Migration 0022 gives each consent state one foreign key, to the ledger row of its own
address and scope, on a populated database of both backends; the downgrade restores the two."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from dispatcher.db import alembic_config, make_engine


def _word(conn: object, address_id: int, scope: str, status: str) -> int:
    return int(
        conn.execute(  # type: ignore[attr-defined]
            text(
                "INSERT INTO consents (address_id, scope, status, source, occurred_at, dated,"
                " recorded_at) VALUES (:a, :s, :st, 'test', CURRENT_TIMESTAMP, true,"
                " CURRENT_TIMESTAMP) RETURNING id"
            ),
            {"a": address_id, "s": scope, "st": status},
        ).scalar_one()
    )


def _state(conn: object, address_id: int, scope: str, consent_id: int) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO consent_states (address_id, scope, status, consent_id, occurred_at,"
            " dated) VALUES (:a, :s, 'opted_in', :c, CURRENT_TIMESTAMP, true)"
        ),
        {"a": address_id, "s": scope, "c": consent_id},
    )


def test_states_point_at_a_word_of_their_own_address_and_scope(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0021")
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        for name in ("ann", "bob"):
            conn.execute(
                text("INSERT INTO addresses (address, created_at) VALUES (:a, CURRENT_TIMESTAMP)"),
                {"a": f"{name}@example.com"},
            )
        for address_id in (1, 2):
            for scope in ("marketing", "affiliates"):
                _state(conn, address_id, scope, _word(conn, address_id, scope, "opted_in"))
        # Before: a state could point at another address's word.
        _state(conn, 1, "other", _word(conn, 2, "marketing", "opted_out"))
        conn.execute(text("DELETE FROM consent_states WHERE scope = 'other'"))
    command.upgrade(config, "0022")
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM consent_states")) == 4
        bob_word = _word(conn, 2, "marketing", "opted_out")
    for address_id, scope in ((1, "marketing"), (2, "affiliates")):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _state(conn, address_id, scope + "-x", bob_word)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text("UPDATE consent_states SET consent_id = :c WHERE address_id = 1"),
            {"c": bob_word},
        )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE consent_states SET consent_id = :c WHERE address_id = 2 AND scope = :s"),
            {"c": bob_word, "s": "marketing"},
        )
    command.downgrade(config, "0021")
    with engine.begin() as conn:
        _state(conn, 1, "other", bob_word)  # the old keys allow it again
    engine.dispose()
