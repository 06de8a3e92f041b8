"""Logs and metrics of the Celery processes (worker and beat).

Celery's own logging set-up is replaced by ours (:func:`dispatcher.ops.logs.setup_logging`),
and every line written while a task runs carries its task id — plus the campaign id and the
batch (first-last delivery id) for the campaign tasks, read from the task's arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun

from dispatcher.ops import logs
from dispatcher.settings import SettingsError, load_settings

# The tasks whose first arguments are (campaign_id[, first_id, last_id]).
_CAMPAIGN_TASKS = {"workers.tasks.fan_out_campaign": 1, "workers.tasks.send_batch": 3}
_bound: dict[str, contextvars.Token[Any]] = {}


@setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    try:
        settings = load_settings()
    except SettingsError:
        # The configuration hook says so on stderr and stops the process.
        logs.setup_logging()
        return
    # Celery's --loglevel (default info) wins over the setting when given.
    level: str | int = loglevel or settings.log_level.upper()
    logs.setup_logging(settings.log_format, level.upper() if isinstance(level, str) else level)


def task_ids(task_name: str, task_id: str | None, args: Any) -> dict[str, Any]:
    """The ids a task's log lines carry."""
    ids: dict[str, Any] = {"task_id": task_id}
    count = _CAMPAIGN_TASKS.get(task_name, 0)
    args = list(args or ())
    if count and len(args) >= 1:
        ids["campaign_id"] = args[0]
    if count == 3 and len(args) >= 3:
        ids["batch"] = f"{args[1]}-{args[2]}"
    return ids


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    if task_id is None:
        return
    _bound[task_id] = logs.bind(**task_ids(getattr(task, "name", ""), task_id, args))


@task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _bound.pop(task_id, None) if task_id else None
    if token is not None:
        with contextlib.suppress(ValueError):  # made in another context: nothing to undo
            logs.unbind(token)
