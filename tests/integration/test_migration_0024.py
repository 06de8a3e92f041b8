"""Migration 0024 gives every signup a random link nonce, on a populated database of both
backends: links mailed before it (which carry none) name nothing afterwards."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from dispatcher.db import alembic_config, make_engine


def test_existing_signups_get_distinct_nonces_and_the_column_is_required(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0023")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for name in ("ann", "bob", "cy"):
                conn.execute(
                    text(
                        "INSERT INTO signup_requests (address, submitted_address, attributes,"
                        " marketing, affiliates, form, policy_version, wording, requested_at,"
                        " message_id, mail_status) VALUES (:a, :a, '{}', true, false, 'f', 'p',"
                        " '{}', CURRENT_TIMESTAMP, :m, 'sent')"
                    ),
                    {"a": f"{name}@example.com", "m": f"<{name}@x>"},
                )
        command.upgrade(config, "0024")
        with engine.begin() as conn:
            nonces = conn.scalars(text("SELECT link_nonce FROM signup_requests")).all()
        assert len(set(nonces)) == 3 and all(len(n) == 32 for n in nonces)
        command.downgrade(config, "0023")
        command.upgrade(config, "0024")
    finally:
        engine.dispose()
