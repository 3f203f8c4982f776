"""The durable, bounded report outbox on a real migrated database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.engine import Engine

from federation import (
    OUTBOX_ACKED,
    OUTBOX_PENDING,
    BackoffPolicy,
    BackPressureError,
    IntegrityError,
    Outbox,
    outbox_table,
)
from node.store import make_engine

T0 = datetime(2026, 3, 2, 9, 0, 0)


def _digest(sequence: int) -> bytes:
    return hashlib.sha256(f"report-{sequence}".encode()).digest()


def _append(box: Outbox, engine: Engine, sequence: int, now: datetime = T0) -> None:
    with engine.begin() as conn:
        box.append(
            conn,
            sequence=sequence,
            digest=_digest(sequence),
            previous_digest=_digest(sequence - 1) if sequence > 1 else b"",
            kind="incremental",
            envelope=f"envelope-{sequence}".encode(),
            now=now,
            bucket_count=sequence,
            up_to_revision=sequence * 10,
        )


def _overflows() -> float:
    return REGISTRY.get_sample_value("supnet_report_outbox_overflows_total") or 0.0


def test_append_then_due_oldest_first_and_head(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10)
    for sequence in (1, 2, 3):
        _append(box, migrated_engine, sequence)
    with migrated_engine.connect() as conn:
        due = box.due(conn, T0)
        head = box.head(conn)
    assert [entry.sequence for entry in due] == [1, 2, 3]
    assert due[0].envelope == b"envelope-1" and due[0].digest == _digest(1)
    assert head is not None and (head.sequence, head.digest, head.up_to_revision) == (3, _digest(3), 30)


def test_append_refuses_a_report_that_does_not_chain(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10)
    _append(box, migrated_engine, 1)
    with pytest.raises(IntegrityError, match="does not follow 1"), migrated_engine.begin() as conn:
        box.append(conn, sequence=3, digest=_digest(3), previous_digest=_digest(2), kind="full", envelope=b"x", now=T0)
    with pytest.raises(IntegrityError, match="does not chain"), migrated_engine.begin() as conn:
        box.append(
            conn, sequence=2, digest=_digest(2), previous_digest=b"\x00" * 32, kind="full", envelope=b"x", now=T0
        )


def test_appends_from_one_read_of_the_outbox_keep_the_chain_and_the_bound(migrated_engine: Engine) -> None:
    # A split report: the builder reads the head and the pending count once, then each append returns the next point.
    box = Outbox(max_pending=3)
    _append(box, migrated_engine, 1)
    with migrated_engine.begin() as conn:
        point = box.append_point(conn, box.head(conn))
        assert point.pending == 1 and point.head is not None and point.head.sequence == 1
        for sequence in (2, 3):
            point = box.append(
                conn,
                sequence=sequence,
                digest=_digest(sequence),
                previous_digest=_digest(sequence - 1),
                kind="full",
                envelope=b"x",
                now=T0,
                up_to_revision=sequence * 10,
                at=point,
            )
        assert point.pending == 3 and point.head == box.head(conn)
        # The bound holds from the point carried along (3 pending), without the outbox read again.
        before = _overflows()
        with pytest.raises(BackPressureError):
            box.append(
                conn,
                sequence=4,
                digest=_digest(4),
                previous_digest=_digest(3),
                kind="full",
                envelope=b"x",
                now=T0,
                at=point,
            )
        assert _overflows() == before + 1
        # And so does the chain: a report that does not follow the point's head is refused.
        with pytest.raises(IntegrityError, match="does not chain"):
            box.append(
                conn,
                sequence=4,
                digest=_digest(4),
                previous_digest=_digest(2),
                kind="full",
                envelope=b"x",
                now=T0,
                at=replace(point, pending=0),
            )
    with migrated_engine.connect() as conn:
        assert box.pending_count(conn) == 3
        with pytest.raises(BackPressureError):
            box.append_point(conn, box.head(conn))


def test_full_outbox_pushes_back_counts_logs_and_drops_nothing(
    migrated_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(max_pending=3)
    for sequence in (1, 2, 3):
        _append(box, migrated_engine, sequence)
    before = _overflows()
    with caplog.at_level(logging.ERROR, logger="federation.outbox"), pytest.raises(BackPressureError, match="full"):
        _append(box, migrated_engine, 4)
    assert _overflows() == before + 1
    assert any("outbox" in record.getMessage() and record.levelno == logging.ERROR for record in caplog.records)
    with migrated_engine.connect() as conn:
        assert box.pending_count(conn) == 3
        assert [entry.sequence for entry in box.due(conn, T0)] == [1, 2, 3]
    # An acknowledgement frees room; the refused report can now be queued.
    with migrated_engine.begin() as conn:
        assert box.mark_acked(conn, 1, _digest(1), T0) == 1
    _append(box, migrated_engine, 4)
    with migrated_engine.connect() as conn:
        assert [entry.sequence for entry in box.due(conn, T0)] == [2, 3, 4]


def test_nothing_is_due_while_the_oldest_backs_off(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10, backoff=BackoffPolicy(base_seconds=10, max_seconds=100, rng=random.Random(7)))
    _append(box, migrated_engine, 1)
    _append(box, migrated_engine, 2)
    with migrated_engine.begin() as conn:
        retry_at = box.mark_failed(conn, 1, "[UNAVAILABLE] parent down", T0)
    assert T0 + timedelta(seconds=5) <= retry_at <= T0 + timedelta(seconds=10)
    with migrated_engine.connect() as conn:
        # Report 2 is due by its own time, but the parent needs 1 first: nothing goes out.
        assert box.due(conn, T0 + timedelta(seconds=4)) == []
        assert box.next_attempt_at(conn) == retry_at
        due = box.due(conn, retry_at)
    assert [entry.sequence for entry in due] == [1, 2]
    assert due[0].attempts == 1
    with migrated_engine.connect() as conn:
        last_error = conn.execute(select(outbox_table.c.last_error).where(outbox_table.c.sequence == 1)).scalar_one()
    assert last_error == "[UNAVAILABLE] parent down"


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    policy = BackoffPolicy(base_seconds=2, max_seconds=60, rng=random.Random(1))
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (20, 60), (500, 60)]:
        delays = {policy.delay(attempts).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (attempts, delays)
        assert len(delays) > 1  # jitter: a fleet does not retry in lock-step


def test_ack_covers_earlier_reports_and_rejects_a_wrong_digest(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10)
    for sequence in (1, 2, 3):
        _append(box, migrated_engine, sequence)
    with pytest.raises(IntegrityError, match="this node sent"), migrated_engine.begin() as conn:
        box.mark_acked(conn, 2, _digest(99), T0)
    with migrated_engine.connect() as conn:
        assert box.pending_count(conn) == 3  # the refused ack changed nothing
    with migrated_engine.begin() as conn:
        assert box.mark_acked(conn, 2, _digest(2), T0 + timedelta(seconds=1)) == 2
    with migrated_engine.connect() as conn:
        statuses = {
            row.sequence: row.status for row in conn.execute(select(outbox_table.c.sequence, outbox_table.c.status))
        }
        assert statuses == {1: OUTBOX_ACKED, 2: OUTBOX_ACKED, 3: OUTBOX_PENDING}
        assert [entry.sequence for entry in box.due(conn, T0)] == [3]
    with pytest.raises(IntegrityError, match="unknown report sequence"), migrated_engine.begin() as conn:
        box.mark_acked(conn, 9, _digest(9), T0)


def test_outbox_survives_a_restart(sqlite_url: str) -> None:
    from node.store import migrate

    engine = make_engine(sqlite_url)
    migrate(engine)
    box = Outbox(max_pending=5)
    _append(box, engine, 1)
    _append(box, engine, 2)
    engine.dispose()
    reopened = make_engine(sqlite_url)
    with reopened.connect() as conn:
        assert [entry.sequence for entry in Outbox(max_pending=5).due(conn, T0)] == [1, 2]
    reopened.dispose()


def test_prune_keeps_the_chain_head_and_pending(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10, retain_acked=1)
    for sequence in range(1, 6):
        _append(box, migrated_engine, sequence)
    with migrated_engine.begin() as conn:
        box.mark_acked(conn, 5, _digest(5), T0)
        assert box.prune(conn) == 4
        head = box.head(conn)
    assert head is not None and head.sequence == 5
    _append(box, migrated_engine, 6)  # the chain continues from the kept head
    with migrated_engine.begin() as conn:
        assert box.prune(conn) == 1  # only the newest report is retained; 6 is pending and the head
        assert [entry.sequence for entry in box.entries(conn)] == [6]


def test_retry_now_makes_backed_off_reports_due(migrated_engine: Engine) -> None:
    box = Outbox(max_pending=10, backoff=BackoffPolicy(base_seconds=600, max_seconds=600))
    _append(box, migrated_engine, 1)
    with migrated_engine.begin() as conn:
        box.mark_failed(conn, 1, "down", T0)
    with migrated_engine.begin() as conn:
        assert box.due(conn, T0 + timedelta(seconds=1)) == []
        box.retry_now(conn, T0 + timedelta(seconds=1))
        assert [entry.sequence for entry in box.due(conn, T0 + timedelta(seconds=1))] == [1]


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Outbox(max_pending=0)
