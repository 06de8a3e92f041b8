"""Staff console latency with many contacts and deliveries on PostgreSQL (not a test).

    .venv/bin/python bench/console.py                 # 1,000,000 contacts and deliveries
    .venv/bin/python bench/console.py --contacts 100000

Fills a throw-away database set-wise (bench/common.populate, then one sent delivery per
contact spread over an hour, with the campaign's counters as the migration fills them;
as many suppressions and audit events as contacts), signs a staff member in through Flask's
test client and times the campaign list, the campaign page, its progress poll (finished,
then sending), a person lookup, and the suppressions and audit-log pages (first page, a
filter, a page deep in the list): p50 and p95 of ``--rounds`` requests each. Target: p95
under 200 ms. Drops the database afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, populate, postgres, say, settings_from  # noqa: E402
from dispatcher.campaigns.services import create_campaign  # noqa: E402
from dispatcher.console import create_console_app  # noqa: E402
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade  # noqa: E402
from dispatcher.sending.staff_text import StaffContent  # noqa: E402
from tests.support.console import PASSWORD, make_staff  # noqa: E402

BODY = "<p>Hello {{ greeting_name }}, new tracks.</p>"


def deliveries(database_url: str, campaign_id: int) -> None:
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO deliveries (campaign_id, contact_id, address_id, status,
                       skip_reason, attempts, created_at, finished_at)
                SELECT :c, id, address_id,
                       CASE WHEN id % 10 IN (1, 2) THEN 'suppressed' ELSE 'sent' END,
                       CASE WHEN id % 10 = 1 THEN 'not_asked'
                            WHEN id % 10 = 2 THEN 'complaint' END,
                       1, now() - interval '1 hour',
                       now() - interval '1 hour' + (id % 3600) * interval '1 second'
                FROM contacts"""
            ),
            {"c": campaign_id},
        )
        # The counters, as migration 0017 fills them for deliveries that exist.
        conn.execute(
            text(
                """INSERT INTO campaign_counts (campaign_id, status, reason, change, at)
                SELECT campaign_id, status, coalesce(skip_reason, ''), count(*),
                       date_trunc('minute', coalesce(finished_at, created_at))
                FROM deliveries
                GROUP BY campaign_id, status, coalesce(skip_reason, ''),
                         date_trunc('minute', coalesce(finished_at, created_at))"""
            )
        )
        conn.execute(
            text("UPDATE campaigns SET status = 'done', started_at = now(), finished_at = now()")
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def lists(database_url: str, events: int) -> None:
    """A rare reason and scope among the suppressions (a selective filter), and ``events``
    audit events: four in five recipient page hits, the rest staff actions of 20 staff."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                """UPDATE suppressions SET reason = 'postal_request', scope = 'marketing'
                WHERE id % 1000 = 7"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO events (occurred_at, kind, actor, ip, user_agent, outcome, detail)
                SELECT now() - (:n - g) * interval '1 second',
                       CASE WHEN g % 5 <> 0 THEN 'unsubscribe_page'
                            WHEN g % 1000 = 5 THEN 'staff_disabled'
                            WHEN g % 3 = 0 THEN 'staff_sign_in'
                            ELSE 'console_suppression_add' END,
                       CASE WHEN g % 5 = 0 THEN 'staff' || (g % 20) || '@staff.example' END,
                       '10.0.0.1', 'bench', 'ok', '{}'
                FROM generate_series(1, :n) g"""
            ),
            {"n": events},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="profile one campaign page")
    args = parser.parse_args()
    with postgres() as url, tempfile.TemporaryDirectory() as home:
        settings = settings_from(bench_env(Path(home), url, "unused"))
        upgrade(settings)
        started = time.monotonic()
        # As many suppressions as contacts: a tenth are the contacts' complaints.
        populate(url, args.contacts, extra_suppressions=args.contacts * 9 // 10)
        sessions = make_sessionmaker(make_engine(url))
        with session_scope(sessions) as session:
            campaign_id = create_campaign(
                session,
                settings,
                name="bench",
                subject="{{ greeting_name }}, new tracks",
                template="_layout",
                content=StaffContent(
                    0, "{{ greeting_name }}, new tracks", "", "html", BODY, None, "_layout"
                ),
            ).id
        deliveries(url, campaign_id)
        lists(url, args.contacts)
        elapsed = time.monotonic() - started
        say(f"filled {args.contacts:,} contacts and deliveries in {elapsed:.0f} s")
        make_staff(settings, sessions, "bench@staff.example", "admin")
        app = create_console_app(settings)
        client = app.test_client()
        page = client.get("/sign-in").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        client.post(
            "/sign-in",
            data={"email": "bench@staff.example", "password": PASSWORD, "csrf_token": token},
        )
        middle = args.contacts // 2
        if "--profile" in sys.argv[1:]:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(client.get, f"/campaigns/{campaign_id}")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        deep = args.contacts // 3
        pages = [
            ("campaign list", "/campaigns"),
            ("campaign page", f"/campaigns/{campaign_id}"),
            ("progress poll", f"/campaigns/{campaign_id}/progress.json"),
            ("person lookup", f"/people?address=r{middle}@example.com"),
            ("suppressions", "/suppressions"),
            ("supp. reason", "/suppressions?reason=postal_request"),
            ("supp. scope", "/suppressions?scope=marketing&all=1"),
            ("supp. deep", f"/suppressions?before={deep}"),
            ("audit log", "/audit"),
            ("audit kind", "/audit?kind=staff_disabled"),
            ("audit staff", "/audit?actor=staff5%40staff.example"),
            ("audit deep", f"/audit?before={deep}"),
            ("sending poll", f"/campaigns/{campaign_id}/progress.json"),
        ]
        for name, path in pages:
            if name == "sending poll":  # the rate over the last minute is read too
                engine = create_engine(url)
                with engine.begin() as conn:
                    conn.execute(text("UPDATE campaigns SET status = 'sending'"))
                engine.dispose()
            timings = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                response = client.get(path)
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            timings.sort()
            p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
            say(
                f"{name:<15} p50 {statistics.median(timings):7.1f} ms   p95 {p95:7.1f} ms"
                f"   {'ok' if p95 < 200 else 'OVER 200 ms'}"
            )


if __name__ == "__main__":
    main()
