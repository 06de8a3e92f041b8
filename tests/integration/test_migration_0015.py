"""Migration 0015 relabels suppressions made by repeated soft bounces, on both backends, and
its downgrade folds them back into ``hard_bounce`` without breaking the one-active rule."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from dispatcher.db import alembic_config, make_engine


def rows(engine: object) -> list[tuple[str, str, str, bool]]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [
            (a, r, s, lifted is not None)
            for a, r, s, lifted in conn.execute(
                text(
                    "SELECT a.address, s.reason, s.source, s.lifted_at FROM suppressions s"
                    " JOIN addresses a ON a.id = s.address_id ORDER BY s.id"
                )
            )
        ]


def test_soft_bounce_suppressions_get_their_reason_and_downgrade_folds_them_back(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0014")
    engine = make_engine(empty_database_url)
    insert = text(
        "INSERT INTO suppressions (address_id, scope, reason, source, created_at)"
        " VALUES (:a, 'global', :r, :s, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        for n, address in enumerate(("full@example.org", "dead@example.org", "both@example.org")):
            conn.execute(
                text(
                    "INSERT INTO addresses (id, address, created_at)"
                    " VALUES (:i, :a, CURRENT_TIMESTAMP)"
                ),
                {"i": n + 1, "a": address},
            )
        conn.execute(insert, {"a": 1, "r": "hard_bounce", "s": "inbound:imap:soft_bounces"})
        conn.execute(insert, {"a": 2, "r": "hard_bounce", "s": "inbound:lmtp"})
        conn.execute(insert, {"a": 3, "r": "hard_bounce", "s": "inbound:maildir:soft_bounces"})

    command.upgrade(config, "0015")
    assert rows(engine) == [
        ("full@example.org", "repeated_soft_bounce", "inbound:imap:soft_bounces", False),
        ("dead@example.org", "hard_bounce", "inbound:lmtp", False),
        ("both@example.org", "repeated_soft_bounce", "inbound:maildir:soft_bounces", False),
    ]

    # Under the new reason an address can hold a hard bounce beside its soft-bounce one.
    with engine.begin() as conn:
        conn.execute(insert, {"a": 3, "r": "hard_bounce", "s": "smtp:campaign:9"})
    command.downgrade(config, "0014")
    assert rows(engine) == [
        ("full@example.org", "hard_bounce", "inbound:imap:soft_bounces", False),
        ("dead@example.org", "hard_bounce", "inbound:lmtp", False),
        ("both@example.org", "hard_bounce", "inbound:maildir:soft_bounces", True),
        ("both@example.org", "hard_bounce", "smtp:campaign:9", False),
    ]
    engine.dispose()
