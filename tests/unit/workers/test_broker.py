"""The embedded broker (kombu's SQLAlchemy transport on a SQLite file) shared by processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import event

from workers.broker import use_fast_sqlalchemy_transport


def test_a_queue_another_process_made_meanwhile_is_taken_not_a_failed_start(
    tmp_path: Path,
) -> None:
    """Two processes find the queue missing; the other one's insert lands first (made here
    by a second connection at the moment this one inserts)."""
    use_fast_sqlalchemy_transport()
    path = tmp_path / "broker.sqlite"
    with Connection(f"sqla+sqlite:///{path}") as connection:
        channel: Any = connection.channel()
        engine = channel._open()[0]
        raced: list[str] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _other_process_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.startswith("INSERT INTO kombu_queue") and not raced:
                raced.append(statement)
                other = sqlite3.connect(path)
                with other:
                    other.execute("INSERT INTO kombu_queue (name) VALUES ('mail')")
                other.close()

        channel._put("mail", '{"body": "1"}')
        assert raced  # the race happened
        channel._put("mail", '{"body": "2"}')
        assert channel._size("mail") == 2
        rows = sqlite3.connect(path).execute("SELECT count(*) FROM kombu_queue").fetchone()
        assert rows == (1,)


def test_a_forked_child_makes_its_own_broker_connections(tmp_path: Path) -> None:
    """The parent used the broker (its engine's pool holds a SQLite connection); a child
    forked then (the embedded beat) must not reuse that connection: it gets an engine of its
    own, publishes, and the parent's connection still works."""
    import os

    use_fast_sqlalchemy_transport()
    path = tmp_path / "broker.sqlite"
    with Connection(f"sqla+sqlite:///{path}") as connection:
        channel: Any = connection.channel()
        channel._put("mail", '{"body": "parent"}')
        inherited = channel._open()[0]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running the parent's cleanup
            code = 1
            try:
                with Connection(f"sqla+sqlite:///{path}") as own:
                    child: Any = own.channel()
                    fresh = child._open()[0] is not inherited
                    child._put("mail", '{"body": "child"}')
                    os.write(write, b"fresh" if fresh else b"inherited")
                    code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        said = os.read(read, 64)
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert said == b"fresh"
        channel._put("mail", '{"body": "parent again"}')
        assert channel._size("mail") == 3
