"""Migration 0007 on a node that already holds alerts (SQLite and PostgreSQL): the records and alerts of a real node
(raised by the real rules) are copied into a database at revision 0006, which is then upgraded to head; every alert
gets the breach moment its rule defines, equal to what the rule engine itself dates it by, except R01 and R11,
which need the calendar and keep raised_at. The buckets are flagged for a rebuild (0008) when they exist."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, select

from node.app import Node
from node.store import Alert, make_engine, migrate
from node.supervision import escalate_alert, run_scan
from tests.harness.clocks import Clock
from tests.harness.postgres import fresh_schema_url
from tests.harness.rules import acceptance, completion, load
from tests.supervision.test_breach_dates import IMPORTED, history

COPIED = ("items", "cases", "steps", "payments", "completions", "complaints", "alerts")


@pytest.fixture
def clock() -> Clock:
    return Clock(IMPORTED)


@contextmanager
def old_database(tmp_path: Path, db_url: str) -> Iterator[Engine]:
    """An empty database of the same kind as ``db_url``, migrated to revision 0006 only."""
    if db_url.startswith("sqlite"):
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        migrate(engine, "0006")
        yield engine
        engine.dispose()
        return
    with fresh_schema_url() as url:
        engine = make_engine(url)
        migrate(engine, "0006")
        yield engine
        engine.dispose()


def copy_records(source: Engine, target: Engine) -> None:
    """Copy the records and alerts, only the columns revision 0006 has (so no breached_at)."""
    new, old = MetaData(), MetaData()
    new.reflect(source, only=COPIED)
    old.reflect(target, only=COPIED)
    with source.connect() as read, target.begin() as write:
        for name in COPIED:
            columns = [column.name for column in old.tables[name].columns]
            assert name != "alerts" or "breached_at" not in columns
            rows = [dict(row._mapping) for row in read.execute(select(*(new.tables[name].c[c] for c in columns)))]
            if rows:
                write.execute(old.tables[name].insert(), rows)


def test_upgrade_dates_existing_alerts_by_their_breach(node: Node, tmp_path: Path, db_url: str) -> None:
    load(node, history())
    load(node, [acceptance("HAND"), completion("HAND", "20250312T100000")])
    run_scan(node, IMPORTED)
    hand = datetime(2025, 4, 16, 9)
    with node.engine.connect() as conn:
        hand_id = conn.execute(
            select(Alert.id).where(Alert.subject == "case:HAND", Alert.rule_id == "R02")
        ).scalar_one()
    escalate_alert(node, hand_id, now=hand)
    run_scan(node, datetime(2025, 5, 12, 9))  # the other yellow cards escalate at their correct_by (R04)
    with node.engine.connect() as conn:
        expected = {
            row.id: (row.rule_id, row.raised_at if row.rule_id in ("R01", "R11") else row.breached_at)
            for row in conn.execute(select(Alert.id, Alert.rule_id, Alert.raised_at, Alert.breached_at))
        }
    rules = {rule for rule, _ in expected.values()}
    assert {"R01", "R02", "R03", "R04", "R05", "R06", "R07", "R08", "R09", "R10"} <= rules
    # The engine dated these away from raised_at, so the upgrade has something to get right.
    assert sum(1 for rule, at in expected.values() if rule != "R01" and at.date() < IMPORTED.date()) >= 15

    with old_database(tmp_path, db_url) as old:
        copy_records(node.engine, old)
        migrate(old)
        with old.connect() as conn:
            upgraded = {
                row.id: (row.rule_id, row.breached_at)
                for row in conn.execute(select(Alert.id, Alert.rule_id, Alert.breached_at))
            }
    assert upgraded == expected
