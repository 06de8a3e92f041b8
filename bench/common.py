"""What every benchmark step shares: the SMTP sink, throw-away databases and queues, bulk
data, and reading a process's peak memory and CPU time from /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from dispatcher.campaigns.fleet import start_due_now
from dispatcher.campaigns.services import create_campaign, schedule_campaign
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.settings import Settings, load_settings
from tests.support.pg import temporary_database
from workers.process import wait_until

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "bench" / ".tools"
PG_ADMIN = os.environ.get(
    "DISPATCHER_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
KEYS = "bench-signing-key-0123456789abcdef"
TEMPLATE = "new-releases"
SUBJECT = "{{ greeting_name }}, new tracks for you"


def say(line: str) -> None:
    print(line, flush=True)


# --- the SMTP sink ----------------------------------------------------------------------------


def cpu_reference() -> float:
    """ms of CPU for a fixed pure-Python loop, ``sum(range(10**6))``: 9-11 on a quiet core of
    the fastest machine these figures were taken on, 16-36 on slower ones. Every figure
    grows with it, and a ratio against a latency-bound ceiling falls: print it with them."""
    began = time.process_time()
    for _ in range(5):
        sum(range(1_000_000))
    return 1000 * (time.process_time() - began) / 5


def smtp_sink_binary() -> Path:
    """Postfix's smtp-sink, unpacked from Debian's package into bench/.tools (no mail system
    is installed: ``apt-get download`` + ``dpkg -x``)."""
    binary = TOOLS / "usr" / "sbin" / "smtp-sink"
    if binary.exists():
        return binary
    TOOLS.mkdir(parents=True, exist_ok=True)
    say("fetching Debian's postfix package for smtp-sink (apt-get download, dpkg -x) ...")
    subprocess.run(["apt-get", "download", "postfix"], cwd=TOOLS, check=True, capture_output=True)
    deb = sorted(TOOLS.glob("postfix_*.deb"))[-1]
    subprocess.run(["dpkg", "-x", str(deb), str(TOOLS)], check=True)
    if not binary.exists():
        raise RuntimeError(f"{deb.name} holds no usr/sbin/smtp-sink")
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Sink:
    port: int
    pid: int


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    """smtp-sink on 127.0.0.1 (backlog 512), discarding every message, running as nobody."""
    binary = smtp_sink_binary()
    port = free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(TOOLS / "usr" / "lib" / "postfix")}
    process = subprocess.Popen(
        [str(binary), "-u", "nobody", f"127.0.0.1:{port}", "512"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: listening(port), 10, what="smtp-sink listening")
        yield Sink(port, process.pid)
    finally:
        process.terminate()
        process.wait(10)


# --- databases and queues ---------------------------------------------------------------------


class PostgresCpu:
    """CPU seconds PostgreSQL spends for one database: its backends (``pg_stat_activity``)
    and the server's own processes (WAL writer, checkpointer: no database), read from
    /proc; a backend that ends between two readings is left out."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.database = database

    def snapshot(self) -> dict[int, float]:
        with self.engine.connect() as conn:
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE (datname = :d OR datname IS NULL)"
                    " AND pid <> pg_backend_pid()"
                ),
                {"d": self.database},
            ).scalars()
            return {pid: process_cpu(pid) for pid in pids}

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextmanager
def postgres() -> Iterator[str]:
    """A new PostgreSQL database for one step; dropped (even with connections) afterwards."""
    with temporary_database(PG_ADMIN, "dispatcher_bench") as url:
        yield url


def delete_queue(queue: str) -> None:
    """Remove what a run with default queue ``queue`` made in RabbitMQ: the queue, its
    notices queue, and the direct exchange Celery named after it."""
    from kombu import Connection

    from workers.app import NOTICES_SUFFIX

    with suppress(Exception), Connection(BROKER, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in (queue, queue + NOTICES_SUFFIX):
            with suppress(Exception):
                channel.queue_delete(name)
        channel.exchange_delete(queue)


def bench_env(home: Path, database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """The ``DISPATCHER_*`` environment of a benchmark run (for this process and the worker)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        {
            "DISPATCHER_HOME": str(home),
            "DISPATCHER_DATABASE_URL": database_url,
            "DISPATCHER_BROKER_URL": BROKER,
            "DISPATCHER_MAIL_URL": f"maildir://{home}/outbox",
            "DISPATCHER_SECRET_KEYS": KEYS,
            "DISPATCHER_BASE_URL": "https://mail.killertracks.com",
            "DISPATCHER_BEAT_INTERVAL_SECONDS": "0.5",
            "DISPATCHER_CELERY_TASK_DEFAULT_QUEUE": queue,
        }
    )
    env.update({f"DISPATCHER_{k.upper()}": v for k, v in extra.items()})
    return env


def settings_from(env: dict[str, str]) -> Settings:
    return load_settings(env)


# --- bulk data --------------------------------------------------------------------------------

_DOMAINS = "ARRAY['example.com','example.org','example.net','mail.example','post.example']"


def populate(
    database_url: str, contacts: int, extra_suppressions: int = 0, unsubscribed: int = 0
) -> None:
    """Set-based: ``contacts`` contacts, of whom 10% never opted in (id % 10 = 1) and 10%
    are suppressed (id % 10 = 2, a complaint); plus ``extra_suppressions`` suppressed
    addresses that are not contacts (the suppression list grows on its own over the years)
    and ``unsubscribed`` past recipients with a marketing unsubscribe (most of a sender's
    suppressions: without them PostgreSQL's statistics say an unsubscribe is rare, and it
    plans the unsubscribe's statements for a list that has none)."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"""INSERT INTO addresses (address, created_at)
                SELECT 'r' || g || '@' || ({_DOMAINS})[1 + g % 5], now()
                FROM generate_series(1, :n) g"""
            ),
            {"n": contacts},
        )
        conn.execute(
            text(
                """INSERT INTO contacts (address_id, submitted_address, first_name, last_name,
                                      attributes, source, collected_at, created_at, updated_at)
                SELECT id, address, 'First' || id, 'Last', '{}', 'bench', now(), now(), now()
                FROM addresses"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO consents (address_id, scope, status, source, occurred_at,
                                      recorded_at)
                SELECT id, 'marketing', 'opted_in', 'bench', now(), now()
                FROM addresses WHERE id % 10 <> 1"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO consent_states (address_id, scope, status, consent_id, occurred_at)
                SELECT address_id, scope, status, id, occurred_at FROM consents"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO suppressions (address_id, scope, reason, source, created_at)
                SELECT id, 'global', 'complaint', 'bench', now() FROM addresses
                WHERE id % 10 = 2"""
            )
        )
        # Suppressed addresses that are not contacts: bounced ones, and past unsubscribes.
        strangers = (
            (extra_suppressions, "s", "suppressed", "global", "hard_bounce"),
            (unsubscribed, "u", "unsubscribed", "marketing", "unsubscribe"),
        )
        for n, label, domain, scope, reason in strangers:
            if not n:
                continue
            conn.execute(
                text(
                    f"""WITH fresh AS (
                        INSERT INTO addresses (address, created_at)
                        SELECT '{label}' || g || '@{domain}.example', now()
                        FROM generate_series(1, :n) g RETURNING id)
                    INSERT INTO suppressions (address_id, scope, reason, source, created_at)
                    SELECT id, :scope, :reason, 'bench', now() FROM fresh"""
                ),
                {"n": n, "scope": scope, "reason": reason},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def scheduled_campaign(settings: Settings, *, nudge: bool = False) -> int:
    """A marketing campaign on the shipped CSS-styled template, scheduled for now."""
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        campaign = create_campaign(
            session, settings, name="bench", subject=SUBJECT, template=TEMPLATE
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    engine.dispose()
    if nudge:  # a worker is running: ask it to start now, as `campaign schedule` does
        start_due_now(settings)
    return campaign_id


def scalar(database_url: str, sql: str, **params: object) -> object:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()
    finally:
        engine.dispose()


# --- /proc ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren, ... (read from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                for child in task.read_text().split():
                    found.append(int(child))
                    stack.append(int(child))
    return found


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM: peak RSS, VmRSS: current), 0 if gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    with suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_report(pid: int) -> dict[int, tuple[float, float]]:
    """Peak RSS (MB) and CPU seconds of ``pid`` and every descendant, while they live."""
    return {p: (status_kb(p, "VmHWM") / 1024, cpu_seconds(p)) for p in [pid, *descendants(pid)]}
