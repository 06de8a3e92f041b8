"""Contacts import speed: a generated CSV of N rows into a fresh SQLite (or given) database.

    .venv/bin/python bench/import_contacts.py [ROWS] [--database-url URL]

Prints rows/s for a first import and for a re-import of the same file (all unchanged).

Measured 2026-11-24, SQLite, 100,000 rows (~1.5 consent changes each), on the shared 2-core
dev machine under load average ~6: first import 243 rows/s, re-import 2,451 rows/s.
The first import's cost is record_consent's per-change statements (lookup, ledger row,
state upsert, audit event); the set-based address/contact/tag statements are a small part.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from dispatcher.contacts.importer import import_contacts
from dispatcher.db import make_engine, make_sessionmaker, upgrade
from dispatcher.settings import load_settings

GENRES = ["jazz", "rock", "ambient", "cinematic", "hip-hop", "orchestral"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(
            "email,first_name,last_name,marketing_consent,affiliates_consent,"
            "consent_source,consent_at,tags,genre\n"
        )
        for i in range(rows):
            consent = rng.choice(["yes", "no", ""])
            affiliates = rng.choice(["yes", "no", "", ""])
            tags = ";".join(rng.sample(GENRES, 2))
            out.write(
                f"person{i}@example{i % 50}.com,First{i},Last{i},{consent},{affiliates},"
                f"bench,2015-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z,{tags},{GENRES[i % 6]}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {"DISPATCHER_HOME": str(home), "DISPATCHER_SECRET_KEYS": "bench-key-0000000000"}
        if args.database_url:
            env["DISPATCHER_DATABASE_URL"] = args.database_url
        settings = load_settings(env)
        upgrade(settings)
        path = home / "contacts.csv"
        write_csv(path, args.rows)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        for label in ("first import", "re-import"):
            started = time.perf_counter()
            report = import_contacts(sessions, path, source="bench", actor="bench")
            elapsed = time.perf_counter() - started
            print(
                f"{label:>12}: {report.read} rows in {elapsed:.1f} s = "
                f"{report.read / elapsed:,.0f} rows/s (created {report.created}, "
                f"updated {report.updated}, unchanged {report.unchanged}, "
                f"invalid {report.invalid})"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
