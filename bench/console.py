"""Staff console latency with many contacts and deliveries on PostgreSQL (not a test).

    .venv/bin/python bench/console.py                 # 1,000,000 contacts and deliveries
    .venv/bin/python bench/console.py --contacts 100000

Fills a throw-away database set-wise (bench/common.populate, then one sent delivery per
contact spread over an hour), signs a staff member in through Flask's test client and times
the campaign list, the campaign page, its progress poll and a person lookup: p50 and p95 of
``--rounds`` requests each. Target: p95 under 200 ms. Drops the database afterwards.
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
        conn.execute(
            text("UPDATE campaigns SET status = 'done', started_at = now(), finished_at = now()")
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
        populate(url, args.contacts)
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
        for name, path in (
            ("campaign list", "/campaigns"),
            ("campaign page", f"/campaigns/{campaign_id}"),
            ("progress poll", f"/campaigns/{campaign_id}/progress.json"),
            ("person lookup", f"/people?address=r{middle}@example.com"),
        ):
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
