"""Migration 0013 gives every existing campaign its own Message-ID nonce, on both backends."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from dispatcher.db import alembic_config, make_engine


def test_existing_campaigns_get_distinct_nonces_and_downgrade_removes_them(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0005")
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        for name in ("a", "b"):
            conn.execute(
                text(
                    "INSERT INTO campaigns (name, subject, template, purpose, status, created_at)"
                    " VALUES (:n, 's', 'new-releases', 'marketing', 'done', CURRENT_TIMESTAMP)"
                ),
                {"n": name},
            )
    command.upgrade(config, "0013")
    with engine.connect() as conn:
        nonces = conn.execute(text("SELECT message_nonce FROM campaigns ORDER BY id")).scalars()
        found = list(nonces)
    assert len(found) == 2 and len(set(found)) == 2 and all(len(n) == 16 for n in found)
    command.downgrade(config, "0005")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM campaigns")).scalar() == 2
    engine.dispose()
