"""The ``dispatcher`` console command: staff commands plus worker, beat and demo.

It lives in the top layer because it starts Celery processes; the staff commands themselves
are in :mod:`dispatcher.cli`.
"""

from __future__ import annotations

import os
import sys

import click

from dispatcher.cli import AppContext, main, pass_app
from workers.demo import demo


def _celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def _metrics_files(app: AppContext, role: str) -> None:
    """Metrics of every process of this worker (or beat) go to files under var/metrics/,
    where ``dispatcher metrics serve`` reads them (prometheus-client's multiprocess mode)."""
    from dispatcher.ops.metrics import MULTIPROC_ENV, multiprocess_env

    # What the worker and beat write under var/ is theirs alone (``dispatcher doctor`` checks).
    os.umask(0o077)
    if not os.environ.get(MULTIPROC_ENV):
        os.environ.update(multiprocess_env(app.settings, role))


@main.command("worker", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=int, default=None, help="processes or threads")
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
)
@click.option("--beat", "-B", is_flag=True, help="also run the scheduler in this worker")
@click.option("--loglevel", default="info", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def worker(
    app: AppContext,
    concurrency: int | None,
    pool: str,
    beat: bool,
    loglevel: str,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker with the project's app (extra arguments go to celery)."""
    app.settings.home.mkdir(parents=True, exist_ok=True)
    _metrics_files(app, "worker")
    # Celery's worker command without Celery's umbrella CLI (workers/worker.py says why).
    argv = [sys.executable, "-m", "workers.worker", f"--pool={pool}", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if beat:
        argv += ["--beat", f"--schedule={app.settings.home / 'celerybeat-schedule'}"]
    os.execv(sys.executable, [*argv, *celery_args])


@main.command("beat", context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", default="info", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def beat(app: AppContext, loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Run the scheduler that starts due campaigns (one per deployment)."""
    schedule = app.settings.home / "celerybeat-schedule"
    app.settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _metrics_files(app, "beat")
    argv = _celery_argv("beat", f"--loglevel={loglevel}", f"--schedule={schedule}")
    os.execv(sys.executable, [*argv, *celery_args])


main.add_command(demo)

__all__ = ["main"]
