"""What a worker process holds: settings, a session factory, the token signer.

Built on first use in each process and rebuilt after a fork, so no connection crosses one.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import celery.platforms
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.sending.transports import close_idle_transports, forget_idle_transports
from dispatcher.settings import Settings, load_settings
from suppression.tokens import TokenSigner


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    signer: TokenSigner
    pid: int


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        settings = load_settings()
        engine = make_engine(settings.database_url)
        _runtime = Runtime(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            signer=TokenSigner(settings.secret_keys),
            pid=os.getpid(),
        )
    return _runtime


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(signum: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, signum)``: the kernel sends ``signum`` to this process when
    its parent dies. OSError when the call fails (Celery then goes on without it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@worker_init.connect
def _parent_death_signal_without_cffi(**_: object) -> None:
    """Each prefork pool process asks to be killed with its main process. billiard makes
    that one system call through cffi whenever cffi is installed (argon2-cffi brings it),
    and cffi parses the C declaration with pycparser: ~3 MB in every pool process for the
    rest of its life. The same call through ctypes, set in the main process before the
    pool forks (issue 13: a pool process's memory)."""
    celery.platforms._set_pdeathsig = set_parent_death_signal


@worker_init.connect
def _database_driver_before_the_pool(**_: object) -> None:
    """The runtime built once in the main process, before the pool forks: each pool
    process then starts with the database driver and its dialect imported instead of
    importing them on its first task (psycopg and its adapters: 0.3 s on a slow core, paid
    again by every pool process Celery starts). No connection is opened here, and each pool
    process makes its own engine (``_forget_parent_connections``)."""
    runtime()


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    global _runtime
    forget_idle_transports()
    if _runtime is not None:
        _runtime.engine.dispose(close=False)
        _runtime = None


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_mail_connections(**_: object) -> None:
    """SMTP connections kept between batches say QUIT when the process ends."""
    close_idle_transports()
