"""A/B of the builder thread (issue 13): the same batches sent in process with the next
messages built while one is on the wire, and built one by one in the sending thread.

    .venv/bin/python bench/overlap.py [--contacts 4000] [--rounds 3]

The two ways alternate, round after round, on the same database and smtp-sink, so a busy
machine slows both alike; compare the medians. Needs PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.common import (  # noqa: E402
    bench_env,
    populate,
    postgres,
    say,
    scheduled_campaign,
    settings_from,
    smtp_sink,
)
from dispatcher.campaigns.fanout import fan_out  # noqa: E402
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade  # noqa: E402
from dispatcher.sending import batch as batch_module  # noqa: E402
from dispatcher.sending.batch import send_batch  # noqa: E402
from suppression.tokens import TokenSigner  # noqa: E402


class BuiltInline:
    """Prebuilt's interface, building each message when the sender asks for it (the way
    before issue 13)."""

    def __init__(self, rows: Any, factory: Any) -> None:
        self.factory = factory

    def __enter__(self) -> BuiltInline:
        return self

    def __exit__(
        self, a: type[BaseException] | None, b: BaseException | None, c: TracebackType | None
    ) -> None:
        return None

    def take(self, row: Any) -> tuple[str, bytes]:
        return self.factory.envelope_from(row), self.factory.build(row)


@contextmanager
def inline_building() -> Any:
    original = batch_module.Prebuilt
    batch_module.Prebuilt = BuiltInline  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        batch_module.Prebuilt = original  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-overlap-"))
    rates: dict[str, list[float]] = {"builder thread": [], "inline": []}
    with smtp_sink() as sink, postgres() as url:
        settings = settings_from(
            bench_env(workdir, url, "unused", mail_url=f"smtp://127.0.0.1:{sink.port}")
        )
        upgrade(settings)
        populate(url, args.contacts)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        signer = TokenSigner(settings.secret_keys)
        campaign_id = scheduled_campaign(settings)
        batches = list(fan_out(sessions, campaign_id, settings.batch_size))
        for round_ in range(args.rounds):
            for way in (
                ("builder thread", "inline") if round_ % 2 == 0 else ("inline", "builder thread")
            ):
                with session_scope(sessions) as session:  # the same rows again
                    session.execute(
                        text(
                            "UPDATE deliveries SET status = 'queued', claim_token = NULL "
                            "WHERE campaign_id = :c"
                        ),
                        {"c": campaign_id},
                    )
                    session.execute(  # a finished campaign claims nothing
                        text("UPDATE campaigns SET status = 'sending' WHERE id = :c"),
                        {"c": campaign_id},
                    )
                sent = 0
                began = time.perf_counter()
                with inline_building() if way == "inline" else _nothing():
                    for first, last in batches:
                        sent += len(
                            send_batch(settings, sessions, signer, campaign_id, first, last).sent
                        )
                rates[way].append(sent / (time.perf_counter() - began))
        engine.dispose()
    for way, values in rates.items():
        say(
            f"{way:15s}: median {statistics.median(values):6.0f} msg/s  (rounds: "
            + ", ".join(f"{v:.0f}" for v in values)
            + ")"
        )
    gain = statistics.median(rates["builder thread"]) / statistics.median(rates["inline"])
    say(f"builder thread / inline: {gain:.2f}x (in process, batches of {settings.batch_size})")


@contextmanager
def _nothing() -> Any:
    yield


if __name__ == "__main__":
    main()
