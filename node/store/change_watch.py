"""``ChangeWatch``: has anyone written to the node's database since the last look? Answered by ``stat``, not SQL.

Background loops (the report and directive senders) must notice writes by other processes (``supnet import`` beside
``supnet serve``) without querying the database every second: at province scale (a district host serving its
streets) those idle queries were most of the tree's idle CPU. On SQLite every commit changes the database file or
its write-ahead log, so comparing their (mtime, size) is enough; two writes within one clock tick that leave the
sizes unchanged could look alike, so the watch also answers "changed" at least every ``recheck_seconds``. Other
databases (PostgreSQL) have no file to look at: the watch always answers "changed" and the loops query as before.
``NextDue`` is what those loops keep between looks: their outbox's next due time, read only when asked to look.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine

# At most this long between real looks, whatever the files say (see the module docstring).
RECHECK_SECONDS = 5.0

_Stamp = tuple[tuple[int, int] | None, ...]


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
        self._recheck_seconds = recheck_seconds
        self._last: _Stamp | None = None
        self._next_recheck = 0.0

    def _stamp(self) -> _Stamp:
        stamps: list[tuple[int, int] | None] = []
        for path in self._files:
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_mtime_ns, status.st_size))
        return tuple(stamps)

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
