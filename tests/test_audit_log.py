"""The audit log in SQL (SQLite and PostgreSQL): append and verify, every tamper kind found at the right seq,
concurrent appenders (threads and a second engine) never fork the chain, and an entry commits with its action."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session

from federation import GENESIS_HASH, AuditHead, AuditResult, InvalidArgumentError, append, entry_hash
from node.audit_log import Action, AuditFilter, AuditLog, record_audit
from node.store import AuditLogEntry, make_engine

T0 = dt.datetime(2026, 3, 2, 1, 30, 0, 123456, tzinfo=dt.UTC)
TABLE = AuditLogEntry.__table__


@pytest.fixture
def audit(migrated_engine: Engine) -> AuditLog:
    return AuditLog(migrated_engine)


def _fill(audit: AuditLog, count: int = 6) -> None:
    for index in range(count):
        audit.record(
            actor=f"gd.c{index % 2}",
            action=Action.REPORT_ACCEPTED if index % 3 else Action.ALERT_ACKNOWLEDGED,
            target=f"t{index}",
            detail={"n": index, "名": "张三"},
            at=T0 + dt.timedelta(minutes=index),
        )


def _row(engine: Engine, at_seq: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(TABLE).where(TABLE.c.seq == at_seq)).one()


def _set(engine: Engine, at_seq: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(TABLE).where(TABLE.c.seq == at_seq).values(**values))


def _rehash(engine: Engine, seq: int) -> None:
    """Recompute one stored row's hash from its (tampered) content: what a careful forger does."""
    entry = next(e for e in AuditLog(engine).entries(limit=None) if e.seq == seq)
    _set(engine, seq, hash=entry_hash(entry))


def test_append_list_verify(audit: AuditLog, migrated_engine: Engine) -> None:
    assert audit.head() is None
    empty = audit.verify()
    assert empty.ok and empty.entries == 0 and empty.head is None
    _fill(audit)
    result = audit.verify()
    assert result.ok, result
    assert result.entries == 6
    newest = audit.entries(limit=1)[0]
    assert result.head == audit.head() == AuditHead(6, newest.hash)
    # Rows round-trip exactly (UTC time with microseconds, canonical detail), and chain as the library says.
    first = audit.entries(AuditFilter(target="t0"))[0]
    assert first.at == T0 and first.prev_hash == GENESIS_HASH
    assert first.detail_json == '{"n":0,"名":"张三"}'
    expected = append(
        None, at=T0, actor="gd.c0", action=Action.ALERT_ACKNOWLEDGED, target="t0", detail={"名": "张三", "n": 0}
    )
    assert first.hash == expected.hash
    assert _row(migrated_engine, 1).at == T0.replace(tzinfo=None)

    assert [e.seq for e in audit.entries()] == [6, 5, 4, 3, 2, 1]  # newest first
    assert [e.seq for e in audit.entries(AuditFilter(action="report.*"))] == [6, 5, 3, 2]
    assert [e.seq for e in audit.entries(AuditFilter(action=Action.ALERT_ACKNOWLEDGED, actor="gd.c1"))] == [4]
    assert [e.seq for e in audit.entries(AuditFilter(since=T0 + dt.timedelta(minutes=4)), limit=5)] == [6, 5]
    assert [e.seq for e in audit.entries(AuditFilter(until=T0 + dt.timedelta(minutes=1)))] == [1]
    assert [e.seq for e in audit.entries(AuditFilter(action="report_*"))] == []  # '_' is no wildcard


def test_entry_commits_or_rolls_back_with_its_action(audit: AuditLog, migrated_engine: Engine) -> None:
    with pytest.raises(RuntimeError), migrated_engine.begin() as conn:
        record_audit(conn, actor="op@gd", action=Action.ALERT_CORRECTED, target="alert:1")
        raise RuntimeError("the action failed after its entry was written")
    assert audit.head() is None
    with migrated_engine.begin() as conn:
        assert record_audit(conn, actor="op@gd", action=Action.ALERT_CORRECTED, target="alert:1") == 1
        assert record_audit(conn, actor="op@gd", action=Action.ALERT_CORRECTED, target="alert:2") == 2
    # An ORM unit of work: the entry goes in with the session's commit, not before.
    with Session(migrated_engine) as session, session.begin():
        assert record_audit(session, actor="op@gd", action=Action.FOLLOWUP_CLOSED, target="evaluation:3") == 3
        assert AuditLog(migrated_engine).head() == AuditHead(2, audit.entries(limit=1)[0].hash)
    assert audit.verify().ok and audit.verify().entries == 3


def test_bad_input_is_refused_and_writes_nothing(audit: AuditLog) -> None:
    with pytest.raises(InvalidArgumentError, match="plain JSON"):
        audit.record(actor="op@gd", action="x.y", detail={"when": T0})
    with pytest.raises(InvalidArgumentError, match="field 'actor': 201 characters, at most 200"):
        audit.record(actor="a" * 201, action="x.y")
    with pytest.raises(InvalidArgumentError, match="needs an action"):
        audit.record(actor="op@gd", action="")
    assert audit.head() is None


def test_edited_row_is_found_at_its_seq(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    _set(migrated_engine, 3, detail='{"n":999}')
    result = audit.verify()
    assert (result.ok, result.first_broken_seq, result.kind) == (False, 3, "edited")
    assert "entry #3: its content does not match its hash" in result.reason


def test_overwritten_hash_is_found_at_its_seq(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    _set(migrated_engine, 4, hash="f" * 64)
    result = audit.verify()
    assert (result.first_broken_seq, result.kind) == (4, "edited")
    assert any("entry #5: prev_hash" in problem for problem in result.problems)


def test_deleted_row_is_found_at_its_seq(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    with migrated_engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.seq == 4))
    result = audit.verify()
    assert (result.first_broken_seq, result.kind) == (4, "deleted")
    assert "entries #4..#4 are missing" in result.reason
    with migrated_engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.seq == 1))
    assert (audit.verify().first_broken_seq, audit.verify().kind) == (1, "deleted")


def test_reordered_rows_are_found(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    # Swap the positions of #3 and #4 (their seq values), leaving each row's content and hash as written.
    _set(migrated_engine, 3, seq=-3)
    _set(migrated_engine, 4, seq=3)
    _set(migrated_engine, -3, seq=4)
    result = audit.verify()
    assert (result.first_broken_seq, result.kind) == (3, "reordered"), result
    assert "chained after the entry now at #4" in result.reason


def test_reordered_and_rehashed_rows_are_found(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    _set(migrated_engine, 3, seq=-3)
    _set(migrated_engine, 4, seq=3)
    _set(migrated_engine, -3, seq=4)
    _rehash(migrated_engine, 3)
    _rehash(migrated_engine, 4)  # both self-consistent now; only the links tell
    result = audit.verify()
    assert (result.first_broken_seq, result.kind) == (3, "reordered"), result
    assert "entry #4 was chained directly after #2" in result.reason


def test_forged_hash_is_found_at_the_forged_seq(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    _set(migrated_engine, 2, result=AuditResult.REFUSED)
    _rehash(migrated_engine, 2)
    result = audit.verify()
    assert (result.first_broken_seq, result.kind) == (2, "forged"), result
    assert "#2 was rewritten and its hash recomputed" in result.reason


def test_a_rewritten_or_cut_tail_needs_a_remembered_head(audit: AuditLog, migrated_engine: Engine) -> None:
    _fill(audit)
    remembered = audit.head()
    assert remembered is not None
    _set(migrated_engine, 6, target="elsewhere")
    _rehash(migrated_engine, 6)
    assert audit.verify().ok  # the last entry has no successor to vouch for it
    result = audit.verify(remembered_head=remembered)
    assert (result.first_broken_seq, result.kind) == (6, "rewritten")
    with migrated_engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.seq >= 5))
    result = audit.verify(remembered_head=remembered)
    assert (result.first_broken_seq, result.kind) == (5, "truncated")
    assert result.reason == "log ends at #4 but #6 was remembered as its head (truncated)"


def test_concurrent_appenders_never_fork_the_chain(db_url: str, migrated_engine: Engine) -> None:
    # A second engine on the same database stands for a second process (a CLI command next to the server).
    second = make_engine(db_url)
    threads_per_engine, per_thread = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads_per_engine * 2)

    def work(engine: Engine, name: str) -> None:
        try:
            start.wait()
            for index in range(per_thread):
                if index % 2:
                    AuditLog(engine).record(actor=name, action="test.own_txn", detail={"i": index})
                else:
                    # In a caller's transaction that read first and writes something of its own before appending.
                    with engine.begin() as conn:
                        conn.execute(select(TABLE.c.seq).limit(1)).all()
                        record_audit(conn, actor=name, action="test.callers_txn", detail={"i": index})
        except BaseException as error:  # reported to the main thread below
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=(engine, f"{label}{number}"))
        for label, engine in (("a", migrated_engine), ("b", second))
        for number in range(threads_per_engine)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.dispose()
    assert errors == []
    total = threads_per_engine * 2 * per_thread
    result = AuditLog(migrated_engine).verify()
    assert result.ok, result
    assert result.entries == total and result.head is not None and result.head.seq == total
    with migrated_engine.connect() as conn:
        prev_hashes = conn.execute(select(TABLE.c.prev_hash)).scalars().all()
    assert len(set(prev_hashes)) == total  # no two entries claim the same predecessor: no fork


@pytest.mark.postgres
def test_postgres_lock_is_per_schema(pg_url: str) -> None:
    """An appender holding the chain lock of one schema does not block another schema's (tests share a db)."""
    from node.store import migrate
    from tests.harness.postgres import PG_ADMIN_URL

    migrated_engine = make_engine(pg_url)
    migrate(migrated_engine)

    other_schema = f"t_audit_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{other_schema}"'))
    other = make_engine(PG_ADMIN_URL, schema=other_schema)
    try:
        migrate(other)
        with migrated_engine.begin() as holding:
            record_audit(holding, actor="a", action="test.hold")  # holds this schema's lock until commit
            with other.begin() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 2000"))  # fail, not hang, if it were blocked
                assert record_audit(conn, actor="b", action="test.other") == 1
    finally:
        other.dispose()
        migrated_engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{other_schema}" CASCADE'))
        admin.dispose()
