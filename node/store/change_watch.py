"""``ChangeWatch``: has anyone written to the node's database since the last look? Answered by ``stat``, not SQL.

Background loops (the report and directive senders) must notice writes by other processes (``supnet import`` beside
``supnet serve``) without querying the database every second: at province scale (a district host serving its
streets) those idle queries were most of the tree's idle CPU. On SQLite every commit changes the database file or
its write-ahead log, so comparing their (mtime, size) is enough; two writes within one clock tick that leave the
sizes unchanged could look alike, so the watch also answers "changed" at least every ``recheck_seconds``. Other
databases (PostgreSQL) have no file to look at: the watch always answers "changed" and the loops query as before.
``NextDue`` is what those loops keep between looks: their outbox's next due time, read only when asked to look.

``FileWatcher``: one thread per process stats every watched node's files each ``WATCH_SECONDS`` and wakes only the
loops whose files changed, so a loop attached to it (``ChangeWatch.attach``) need not wake itself to look: a host of
hundreds of nodes then has one timer for all their senders instead of two per node (issue 17, idle CPU).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

# At most this long between real looks, whatever the files say (see the module docstring).
RECHECK_SECONDS = 5.0
# How often the shared FileWatcher stats the watched files.
WATCH_SECONDS = 1.0
# A loop woken by the FileWatcher still looks this often: the watcher sees any write that changes a file's
# (mtime, size); this only bounds the rare write it could miss (the same size within one clock tick).
WATCHED_RECHECK_SECONDS = 60.0

_Stamp = tuple[tuple[int, int] | None, ...]


def file_stamp(files: tuple[Path, ...]) -> _Stamp:
    """(mtime_ns, size) of each file, None for a file that does not exist."""
    stamps: list[tuple[int, int] | None] = []
    for path in files:
        try:
            status = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((status.st_mtime_ns, status.st_size))
    return tuple(stamps)


class FileWatcher:
    """One daemon thread stat-ing every subscription's files each ``interval``; a change calls its ``wake``.

    The thread runs only while something is subscribed. ``shared()`` is the process's one watcher.
    """

    _shared: FileWatcher | None = None
    _shared_lock = threading.Lock()

    def __init__(self, interval: float = WATCH_SECONDS) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[tuple[Path, ...], Callable[[], None], list[_Stamp]]] = {}
        self._next_token = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def shared(cls) -> FileWatcher:
        """The process's watcher (created at first use)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def subscribe(self, files: tuple[Path, ...], wake: Callable[[], None]) -> int:
        """Call ``wake`` (on the watcher's thread; keep it short) whenever one of ``files`` changes; a token."""
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._watched[token] = (files, wake, [file_stamp(files)])
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="file-watcher", daemon=True)
                self._thread.start()
        return token

    def unsubscribe(self, token: int) -> None:
        """Stop watching for ``token``; the thread ends with the last subscription."""
        with self._lock:
            self._watched.pop(token, None)
            if self._watched or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self._interval):
            with self._lock:
                watched = list(self._watched.values())
            for files, wake, last in watched:
                stamp = file_stamp(files)
                if stamp != last[0]:
                    last[0] = stamp
                    try:
                        wake()
                    except Exception:  # one bad subscriber must not blind the others
                        log.exception("file watcher: waking the watcher of %s failed", files[0])


def sqlite_files(engine: Engine) -> tuple[Path, ...]:
    """The files an SQLite database's commits change (the database and its -wal); () for other databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return ()
    database = Path(url.database)
    return (database, database.with_name(database.name + "-wal"))


class ChangeWatch:
    """``changed()``: True when the database may have changed since the previous True (cheap when it has not)."""

    def __init__(self, engine: Engine, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._files = sqlite_files(engine)
        self._recheck_seconds = self._base_recheck = recheck_seconds
        self._last: _Stamp | None = None
        self._next_recheck = 0.0
        self._token: int | None = None

    @property
    def attached(self) -> bool:
        """True while the shared FileWatcher wakes the loop on a change (then it need not poll the files)."""
        return self._token is not None

    def attach(self, wake: Callable[[], None]) -> None:
        """Have the process's FileWatcher call ``wake`` when the files change (nothing for a database without)."""
        if self._files and self._token is None:
            self._token = FileWatcher.shared().subscribe(self._files, wake)
            self._recheck_seconds = max(self._recheck_seconds, WATCHED_RECHECK_SECONDS)

    def detach(self) -> None:
        """Stop the wake-ups of ``attach``."""
        token, self._token = self._token, None
        self._recheck_seconds = self._base_recheck
        if token is not None:
            FileWatcher.shared().unsubscribe(token)

    def seconds_to_recheck(self) -> float:
        """Seconds until ``changed`` answers True whatever the files say (a loop's longest sleep when attached)."""
        return max(self._next_recheck - time.monotonic(), 0.0)

    def _stamp(self) -> _Stamp:
        return file_stamp(self._files)

    def changed(self) -> bool:
        """True at the first call, after any write since the last True, and at least every ``recheck_seconds``.

        Call it before reading: a write after the stamp is taken changes the files again and shows next time.
        """
        if not self._files:
            return True
        stamp = self._stamp()
        now = time.monotonic()
        if stamp == self._last and now < self._next_recheck:
            return False
        self._last = stamp
        self._next_recheck = now + self._recheck_seconds
        return True


class NextDue:
    """An outbox's next due time, kept from the last look so that idle passes (nothing written) read no table.

    ``read`` gives the earliest next attempt of the outbox (None: nothing pending); ``now`` is the node's clock.
    """

    def __init__(
        self, engine: Engine, read: Callable[[Connection], datetime | None], now: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._read = read
        self._now = now
        self._next_at: datetime | None = None

    def seconds(self, *, look: bool = True) -> float:
        """Seconds until the next attempt is due (0: now; infinity: nothing pending).

        ``look=False``: from the outbox as last read (a loop's idle pass, when ``ChangeWatch`` saw no write).
        """
        if look:
            with self._engine.connect() as conn:
                self._next_at = self._read(conn)
        if self._next_at is None:
            return math.inf
        return max((self._next_at - self._now()).total_seconds(), 0.0)
