"""NextDue: an outbox's next due time, read when asked to look and kept between looks (the senders' idle passes)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from node.store import NextDue

NOON = datetime(2025, 3, 10, 12)


def _earliest(conn: Connection) -> datetime | None:
    value = conn.execute(text("SELECT MIN(next_at) FROM outbox")).scalar()
    return None if value is None else datetime.fromisoformat(value)


def test_next_due_reads_only_when_it_looks_and_counts_down_on_the_clock_between(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE outbox (next_at TEXT)"))
    clock = [NOON]
    due = NextDue(engine, _earliest, lambda: clock[0])
    assert due.seconds() == math.inf  # nothing pending

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO outbox VALUES (:at)"), {"at": (NOON + timedelta(seconds=30)).isoformat()})
    assert due.seconds(look=False) == math.inf  # not looked: the last read stands
    assert due.seconds() == 30.0

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox"))
    clock[0] = NOON + timedelta(seconds=10)
    assert due.seconds(look=False) == 20.0  # kept from the last look, counted down on the node's clock
    clock[0] = NOON + timedelta(minutes=5)
    assert due.seconds(look=False) == 0.0  # overdue is due now, never negative
    assert due.seconds() == math.inf  # a look sees the outbox emptied
    engine.dispose()
