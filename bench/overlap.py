"""How the next message is built while one is on the wire (issue 13): the same batches
sent in process three ways — built in the sending thread while the replies are on their way
(what ships), by a builder thread ahead of the sender (the way before), and one by one when
the sender asks (no overlap).

    .venv/bin/python bench/overlap.py [--contacts 4000] [--rounds 3]

The ways take turns, round after round, on the same database and smtp-sink, so a busy
machine slows all alike; compare the medians. Needs PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
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
from dispatcher.sending.composing import ClaimedRow, MessageFactory  # noqa: E402
from dispatcher.sending.prebuild import BuiltWhileWaiting  # noqa: E402
from suppression.tokens import TokenSigner  # noqa: E402

# The builder thread that shipped before (issue 13's first round): it held the interpreter
# lock while the sender's replies waited to be read.
# Deep enough that the sender never waits for a message, shallow enough that little is
# built in vain when a batch stops early (connection lost, database away).
_DEPTH = 4


class BuiltInThread:
    """The batch's messages, built ahead in a thread; :meth:`take` returns them in order."""

    def __init__(
        self, rows: Sequence[ClaimedRow], factory: MessageFactory, depth: int = _DEPTH
    ) -> None:
        self._rows = [row for row in rows if row.address is not None]
        self._factory = factory
        self._ready: queue.Queue[tuple[ClaimedRow, tuple[str, bytes] | BaseException]] = (
            queue.Queue(maxsize=depth)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-builder", daemon=True)

    def __enter__(self) -> BuiltInThread:
        if self._rows:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a builder waiting for room
                self._ready.get_nowait()
            self._thread.join(0.05)

    def _run(self) -> None:
        for row in self._rows:
            item: tuple[str, bytes] | BaseException
            try:
                item = (self._factory.envelope_from(row), self._factory.build(row))
            except BaseException as exc:  # handed to the sender, which decides  # noqa: BLE001
                item = exc
            while not self._stop.is_set():
                try:
                    self._ready.put((row, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return

    def ahead(self) -> None:
        return None  # the thread is ahead already

    def take(self, row: ClaimedRow) -> tuple[str, bytes]:
        """Envelope sender and message for ``row`` (the next row with an address), or the
        exception building it raised."""
        while True:
            try:
                built_for, item = self._ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    raise RuntimeError("the message builder stopped") from None
        if built_for is not row:
            raise RuntimeError("messages built out of order")  # a bug: send nothing more
        if isinstance(item, BaseException):
            raise item
        return item


class BuiltInline:
    """The builders' interface, building each message when the sender asks for it (the way
    before issue 13)."""

    def __init__(self, rows: Any, factory: Any) -> None:
        self.factory = factory

    def __enter__(self) -> BuiltInline:
        return self

    def __exit__(
        self, a: type[BaseException] | None, b: BaseException | None, c: TracebackType | None
    ) -> None:
        return None

    def ahead(self) -> None:
        return None

    def take(self, row: Any) -> tuple[str, bytes]:
        return self.factory.envelope_from(row), self.factory.build(row)


WAYS: dict[str, Any] = {
    "while waiting": BuiltWhileWaiting,
    "builder thread": BuiltInThread,
    "inline": BuiltInline,
}


@contextmanager
def building(way: str) -> Any:
    original = batch_module.BUILDER
    batch_module.BUILDER = WAYS[way]
    try:
        yield
    finally:
        batch_module.BUILDER = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-overlap-"))
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
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
            order = list(WAYS)
            for way in order[round_ % len(order) :] + order[: round_ % len(order)]:
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
                with building(way):
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
    inline = statistics.median(rates["inline"])
    for way in ("while waiting", "builder thread"):
        gain = statistics.median(rates[way]) / inline
        say(f"{way} / inline: {gain:.2f}x (in process, batches of {settings.batch_size})")


if __name__ == "__main__":
    main()
