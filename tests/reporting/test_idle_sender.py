"""An idle node reads no table: the senders look at the database files (ChangeWatch) and still see other writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from node.store import ChangeWatch, FileWatcher
from tests.harness.reports import nonzero, own_totals, subtree_of
from tests.harness.tree import Tree


@contextmanager
def _statements_by(engine: Engine, thread_prefix: str) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs on threads whose name starts with ``thread_prefix``."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name.startswith(thread_prefix):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_change_watch_sees_a_commit_by_another_connection(tmp_path: Path) -> None:
    database = tmp_path / "watched.db"
    writer = create_engine(f"sqlite:///{database}")
    with writer.begin() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    watch = ChangeWatch(create_engine(f"sqlite:///{database}"), recheck_seconds=3600)
    assert watch.changed()  # the first look always reads
    assert not watch.changed()  # nothing written since
    with writer.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert watch.changed()
    assert not watch.changed()


def test_change_watch_rechecks_after_its_interval_and_always_reads_without_files(tmp_path: Path) -> None:
    database = tmp_path / "watched.db"
    watch = ChangeWatch(create_engine(f"sqlite:///{database}"), recheck_seconds=0.2)
    assert watch.changed()
    assert not watch.changed()
    time.sleep(0.25)
    assert watch.changed()  # the interval passed: a real look whatever the files say
    memory = ChangeWatch(create_engine("sqlite://"))
    assert memory.changed() and memory.changed()  # no file to watch: every look reads


def test_the_file_watcher_wakes_only_the_watch_whose_files_changed(tmp_path: Path) -> None:
    engines: dict[str, Engine] = {}
    for name in ("a", "b"):
        engines[name] = create_engine(f"sqlite:///{tmp_path / name}.db")
        with engines[name].begin() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
    woken = {name: threading.Event() for name in engines}
    watches = {name: ChangeWatch(engine) for name, engine in engines.items()}
    for name, watch in watches.items():
        watch.attach(woken[name].set)
    try:
        assert all(watch.attached for watch in watches.values())
        assert not woken["a"].wait(2.5) and not woken["b"].is_set()  # idle: nobody is woken
        with engines["b"].begin() as conn:  # a writer that tells nobody, as another process
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert woken["b"].wait(5.0)
        assert not woken["a"].is_set()
    finally:
        for watch in watches.values():
            watch.detach()
    assert FileWatcher.shared() is FileWatcher.shared()  # one watcher per process


def test_an_idle_sender_reads_no_table_yet_reports_another_writers_change(tmp_path: Path) -> None:
    chain = Tree(tmp_path, ["gd", "gd.gz"], federation={"report_on_change": True, "report_debounce_seconds": 0.3})
    try:
        sender = chain.sender("gd.gz")
        sender.start()
        time.sleep(1.5)  # the first passes read (start-up); from here on the node is idle
        with _statements_by(chain["gd.gz"].engine, "report-sender") as statements:
            time.sleep(4.0)
        # Polling read the revision and the outbox every second (about 12 statements in 4 s); woken by the
        # process's FileWatcher, the idle loop reads nothing until a write or its 60 s recheck.
        assert len(statements) == 0, statements
        # A writer that does not call notify_change (as `supnet import` in another process): seen in the files.
        chain.import_synthetic("gd.gz", cases=25, seed=3)
        expected = nonzero(own_totals(chain["gd.gz"]))
        _wait_for(lambda: nonzero(subtree_of(chain["gd"])) == expected)
    finally:
        chain.close()
