"""``python -m workers.worker [options]``: Celery's own ``worker`` command for our app, run
without Celery's umbrella command line.

It takes exactly the options of ``celery -A workers worker`` (the same click command parses
them), and ``celery -A workers worker`` keeps working. The umbrella first imports every
``celery`` sub-command, the interactive shells among them (click-repl, prompt_toolkit,
pygments): about 7 MB of objects that each pool process inherits at fork, holds for its
whole life and never uses (issue 13: a pool process's memory while sending).
"""

from __future__ import annotations

import sys

from celery.bin.base import CLIContext
from celery.bin.worker import worker

from workers.app import app

# What ``celery`` reads for its worker options (``CELERY_WORKER_CONCURRENCY`` …).
ENVVAR_PREFIX = "CELERY_WORKER"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if {"-D", "--detach"} & set(args):
        # Celery detaches by re-running ``python -m celery`` with these arguments.
        sys.exit("Error: --detach: run `celery -A workers worker --detach` instead")
    worker.main(
        args=args,
        prog_name="python -m workers.worker",
        obj=CLIContext(app=app, no_color=False, workdir=None),
        auto_envvar_prefix=ENVVAR_PREFIX,
    )


if __name__ == "__main__":
    main()
