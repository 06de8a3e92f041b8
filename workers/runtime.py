"""What a worker process holds: settings, a session factory, the token signer.

Built on first use in each process and rebuilt after a fork, so no connection crosses one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery.signals import worker_process_init
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker
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


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    global _runtime
    if _runtime is not None:
        _runtime.engine.dispose(close=False)
        _runtime = None
