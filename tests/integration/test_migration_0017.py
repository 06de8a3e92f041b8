"""Migration 0017 counts the deliveries that exist into the campaigns' counters (per status,
skip reason and minute), on both backends, and its downgrade removes what it added."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from dispatcher.campaigns import counts
from dispatcher.db import alembic_config, make_engine, make_sessionmaker


def test_existing_deliveries_are_counted_and_downgrade_removes_the_counters(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0014")
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (name, subject, template, purpose, status, created_at,"
                " message_nonce) VALUES ('a', 's', 'new-releases', 'marketing', 'done',"
                " CURRENT_TIMESTAMP, 'n1')"
            )
        )
        for i in range(7):
            conn.execute(
                text("INSERT INTO addresses (address, created_at) VALUES (:a, CURRENT_TIMESTAMP)"),
                {"a": f"m{i}@example.com"},
            )
            conn.execute(
                text(
                    "INSERT INTO contacts (address_id, submitted_address, attributes, source,"
                    " collected_at, created_at, updated_at) VALUES (:i, :a, '{}', 't',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"i": i + 1, "a": f"m{i}@example.com"},
            )
            status, reason = [
                ("sent", None),
                ("sent", None),
                ("suppressed", "not_asked"),
                ("failed", "hard_bounce"),
                ("cancelled", "unsubscribe"),
                ("queued", None),
                ("sent", None),
            ][i]
            conn.execute(
                text(
                    "INSERT INTO deliveries (campaign_id, contact_id, address_id, status,"
                    " skip_reason, attempts, created_at, finished_at) VALUES (1, :i, :i, :s,"
                    " :r, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"i": i + 1, "s": status, "r": reason},
            )
    command.upgrade(config, "0017")
    with make_sessionmaker(engine)() as session:
        assert counts.verify(session) == []
        found = counts.current(session, [1])[1]
        assert found.by_status["sent"] == 3 and found.by_status["queued"] == 1
        assert found.by_reason == {"hard_bounce": 1, "not_asked": 1, "unsubscribe": 1}
        assert sum(n for _, n in counts.sent_per_minute(session, 1)) == 3
    command.downgrade(config, "0014")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar() == 7
    engine.dispose()
