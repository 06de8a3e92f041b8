"""A sending pool process carries only what it uses (issue 13: at most 80 MB a pool process).

A prefork pool process is a fork of the worker's main process: everything the main process
imported before forking stays in every pool process's memory, and so does what the pool
process imports to send. A fresh interpreter does here what the worker does (imports its
entry point, runs Celery's pool-process set-up, sends a campaign's batch for real) and lists
its modules; what a sending process does not need must not be among them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.services import create_campaign, schedule_campaign
from dispatcher.db import session_scope
from dispatcher.settings import PROJECT_ROOT, Settings
from tests.factories import make_contact

# Modules a sending pool process never uses, and what imported them before.
NOT_IN_A_POOL_PROCESS = {
    # Celery's umbrella command line (its shells: click-repl, prompt_toolkit), ~7 MB;
    # the worker starts through workers/worker.py instead.
    "celery.bin.celery": "celery's umbrella CLI",
    "click_repl": "celery's umbrella CLI",
    "prompt_toolkit": "celery's umbrella CLI",
    # billiard's prctl(PR_SET_PDEATHSIG) through cffi, whose C parser stays, ~3 MB;
    # workers/runtime.py makes the call through ctypes.
    "pycparser": "billiard's parent-death signal through cffi",
    "_cffi_backend": "billiard's parent-death signal through cffi",
}

POOL_PROCESS = """
import json, sys
import workers.worker  # the worker's main process, as `dispatcher worker` starts it
from celery.concurrency.prefork import process_initializer
from celery.signals import worker_init
from workers.app import app

app.loader.init_worker()  # the main process: imports the task modules,
worker_init.send(sender=None)  # then announces itself; later it forks the pool
process_initializer(app, "pool@test")  # what billiard runs first in each pool process
from workers.tasks import send_batch_task

results = [send_batch_task(*batch) for batch in json.loads(sys.argv[1])]
print(json.dumps({"results": results, "modules": sorted(sys.modules)}))
"""


def run_as_worker(
    settings: Settings, script: str, *args: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter with the settings' environment (and ``environment``),
    as a worker process has it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_HOME=str(settings.home),
        DISPATCHER_SECRET_KEYS=",".join(settings.secret_keys),
        DISPATCHER_BASE_URL=settings.base_url,
        **environment,
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_sending_pool_process_does_not_import_what_it_never_uses(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        for n in range(3):
            make_contact(session, f"r{n}@example.com")
        campaign = create_campaign(
            session, settings, name="c", subject="new tracks", template="new-releases"
        )
        # As staff schedule it: the render is prepared and stored here, not in the worker.
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    batches = [
        [campaign_id, first, last] for first, last in fan_out(session_factory, campaign_id, 100)
    ]
    done = run_as_worker(settings, POOL_PROCESS, json.dumps(batches))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert sum(r.get("sent", 0) for r in found["results"]) == 3  # it did send
    modules = set(found["modules"])
    carried = {
        name: why
        for name, why in NOT_IN_A_POOL_PROCESS.items()
        if name in modules or any(m.startswith(name + ".") for m in modules)
    }
    assert carried == {}
    assert settings.outbox is not None
    assert len(list(Path(settings.outbox, "new").iterdir())) == 3


def test_the_parent_death_signal_is_still_set() -> None:
    """What Celery asks of each pool process (die with the main process) still happens:
    the kernel reports the signal back (PR_GET_PDEATHSIG)."""
    script = """
import ctypes, signal
from workers.runtime import set_parent_death_signal
set_parent_death_signal(signal.SIGKILL)
found = ctypes.c_int()
assert ctypes.CDLL(None).prctl(2, ctypes.byref(found)) == 0  # PR_GET_PDEATHSIG
print(found.value)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(done.stdout) == signal.SIGKILL


def test_the_worker_entry_refuses_detach_with_the_command_that_can() -> None:
    """Celery detaches by re-running ``python -m celery`` with the same arguments, which
    lack ``-A workers worker`` here: the entry says what to run instead."""
    done = subprocess.run(
        [sys.executable, "-m", "workers.worker", "--detach"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: --detach: run `celery -A workers worker --detach` instead"


def test_the_database_driver_is_imported_before_the_pool_forks(settings: Settings) -> None:
    """A pool process inherits the driver from the main process instead of importing it
    on its first task (psycopg: 0.3 s on a slow core, paid by every new pool process)."""
    script = """
import sys
import workers.worker
from celery.signals import worker_init
from workers.app import app

app.loader.init_worker()
before = "psycopg" in sys.modules
worker_init.send(sender=None)  # the main process, just before the pool forks
print(before, "psycopg" in sys.modules)
"""
    # Never connected to: making the engine opens no connection.
    done = run_as_worker(
        settings, script, DISPATCHER_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:9/none"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
