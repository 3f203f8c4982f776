"""The item catalogue as a versioned register (docs/domain.md §9), on SQLite and PostgreSQL, through the real
importer: new versions instead of conflicts, cases under the version in force at acceptance, retire / reactivate,
Panyu's rule (R14) and the catalogue's additive figures; migration 0010 on a database holding items."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from node.app import Node
from node.errors import InvalidStateError, NotFoundError, ValidationError
from node.store import Alert, AuditLogEntry, Case, Item, ItemVersion, make_engine, migrate
from node.supervision import (
    catalogue_figures,
    explain_item,
    get_item,
    item_history,
    list_items,
    reactivate_item,
    retire_item,
    run_scan,
)
from tests.harness.clocks import Clock
from tests.harness.postgres import fresh_schema_url
from tests.harness.rules import ITEM, ITEM_CODE, acceptance, assert_metrics_consistent, items, load

NOW = datetime(2025, 3, 20, 12, 0)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def item(**changes: Any) -> tuple[str, int, dict[str, Any]]:
    return ("item", 0, {**ITEM, **changes})


def case_limits(node: Node, case_no: str) -> tuple[int, datetime]:
    with node.engine.connect() as conn:
        row = conn.execute(select(Case.promised_limit, Case.promised_due_at).where(Case.case_no == case_no)).one()
    return row.promised_limit, row.promised_due_at


def r14_alerts(node: Node) -> list[tuple[str, str]]:
    with node.engine.connect() as conn:
        rows = conn.execute(select(Alert.subject, Alert.status).where(Alert.rule_id == "R14").order_by(Alert.id))
        return [(row.subject, row.status) for row in rows]


def test_a_changed_limit_is_a_new_version_and_cases_use_the_one_in_force(node: Node) -> None:
    load(node, [*items(), acceptance("V-1", "20250303T100000")])
    assert case_limits(node, "V-1") == (5, datetime(2025, 3, 10, 23, 59, 59))

    # The limit is cut from 5 to 3 working days from 2025-03-05: a new version, not a conflict.
    summary = load(node, [item(promised_limit="3", effective_from="20250305T000000")])
    assert summary.accepted == 1
    load(node, [acceptance("V-2", "20250306T100000"), acceptance("V-0", "20250304T090000")])
    assert case_limits(node, "V-2") == (3, datetime(2025, 3, 11, 23, 59, 59))
    assert case_limits(node, "V-0")[0] == 5  # accepted before the cut: version 1
    assert case_limits(node, "V-1")[0] == 5  # stored cases never change

    view = get_item(node, ITEM_CODE)
    assert (view.version, view.promised_limit, view.effective_from) == (2, 3, datetime(2025, 3, 5))
    history = item_history(node, ITEM_CODE)
    assert [(v.version, v.effective_from, v.promised_limit) for v in history.versions] == [
        (1, None, 5),
        (2, datetime(2025, 3, 5), 3),
    ]
    # Either version sent again is a duplicate; a changed identity is still a conflict.
    again = load(node, [item(), item(promised_limit="3", effective_from="20250305T000000")])
    assert (again.accepted, again.duplicates) == (0, 2)
    conflict = load(node, [item(body_code="11440112MB2C99999X")], allow_rejects=True)
    assert conflict.rejected == 1 and "conflict" in str(conflict.errors[0])
    assert_metrics_consistent(node)


def test_a_version_cannot_rewrite_the_past(node: Node) -> None:
    load(node, [*items(), item(promised_limit="4", effective_from="20250305T000000")])
    load(node, [acceptance("P-1", "20250310T100000")])
    # Before the latest version, and before a stored case of the item: both refused, naming the field.
    refused = load(
        node,
        [
            item(promised_limit="2", effective_from="20250304T000000"),
            item(promised_limit="3", effective_from="20250308T000000"),
        ],
        allow_rejects=True,
    )
    assert refused.rejected == 2
    assert {e.field for e in refused.errors} == {"effective_from"}
    assert "after version 2" in str(refused.errors[0]) and "P-1" not in str(refused.errors[0])
    assert "has a case accepted" in str(refused.errors[1])
    # Without a 生效时间 a new version takes effect at the import (the node's clock).
    load(node, [item(promised_limit="3")])
    assert get_item(node, ITEM_CODE).effective_from == NOW
    # A case needs a version in force: an item whose first version starts later has none before it.
    load(node, [item(implementation_code="LATE-1", basic_code="000101009", effective_from="20250315T000000")])
    early = load(node, [acceptance("E-1", "20250310T100000", implementation_code="LATE-1")], allow_rejects=True)
    assert early.rejected == 1 and "no version in force" in str(early.errors[0])


def test_retire_and_reactivate(node: Node) -> None:
    load(node, items())
    with pytest.raises(ValidationError):
        retire_item(node, ITEM_CODE, "  ")
    with pytest.raises(NotFoundError):
        retire_item(node, "NOPE", "gone")
    with pytest.raises(InvalidStateError):
        reactivate_item(node, ITEM_CODE)
    retired = retire_item(node, ITEM_CODE, "并入一件事", at=datetime(2025, 3, 18))
    assert (retired.status, retired.retired_at, retired.retire_reason) == (
        "retired",
        datetime(2025, 3, 18),
        "并入一件事",
    )
    with pytest.raises(InvalidStateError):
        retire_item(node, ITEM_CODE, "again")
    assert [v.implementation_code for v in list_items(node, status="retired")] == [ITEM_CODE]
    back = reactivate_item(node, ITEM_CODE, "恢复办理")
    assert (back.status, back.retired_at) == ("in_force", None)
    changes = item_history(node, ITEM_CODE).changes
    assert [(c.action, c.reason) for c in changes] == [("retire", "并入一件事"), ("reactivate", "恢复办理")]
    with node.engine.connect() as conn:
        actions = conn.execute(select(AuditLogEntry.action).where(AuditLogEntry.target == f"item:{ITEM_CODE}")).all()
    assert sorted(a for (a,) in actions) == ["item.reactivated", "item.retired"]


def test_panyu_rule_flags_items_until_explained(node: Node) -> None:
    # 8 of 10 working days: more than half the legal limit.
    load(node, [*items(), item(implementation_code="PY-1", basic_code="000101008", promised_limit="8")])
    assert r14_alerts(node) == [("item:PY-1:version:1", "raised")]
    assert [v.implementation_code for v in list_items(node, flagged_only=True)] == ["PY-1"]
    assert run_scan(node).by_rule.get("R14", 0) == 0  # one flag per version, not one per scan

    explained = explain_item(node, "PY-1", "需现场勘验，时限不宜再压缩")
    assert not explained.flagged and explained.explanation.startswith("需现场勘验")
    assert r14_alerts(node) == [("item:PY-1:version:1", "corrected")]

    # A new version above half again needs its own explanation; one cut below half closes it.
    load(
        node,
        [
            item(
                implementation_code="PY-1", basic_code="000101008", promised_limit="9", effective_from="20250319T000000"
            )
        ],
    )
    assert r14_alerts(node)[-1] == ("item:PY-1:version:2", "raised")
    load(
        node,
        [
            item(
                implementation_code="PY-1", basic_code="000101008", promised_limit="4", effective_from="20250320T000000"
            )
        ],
    )
    assert r14_alerts(node)[-1] == ("item:PY-1:version:2", "corrected")
    assert list_items(node, flagged_only=True) == []
    assert_metrics_consistent(node)  # the flags are reminders on their breach day, like any alert


def test_existing_items_are_flagged_by_the_scan_and_retiring_closes_the_flag(node: Node) -> None:
    load(node, items())
    with node.engine.begin() as conn:  # as a node upgraded from 0009 holds it: no flag yet
        conn.execute(ItemVersion.__table__.update().values(promised_limit=9))  # type: ignore[attr-defined]
        conn.execute(Alert.__table__.delete())  # type: ignore[attr-defined]
    with node.engine.begin() as conn:
        conn.execute(Item.__table__.update().values(promised_limit=9))  # type: ignore[attr-defined]
    assert run_scan(node).by_rule["R14"] == 3
    retire_item(node, ITEM_CODE, "取消")
    assert sum(1 for _, status in r14_alerts(node) if status == "raised") == 2
    with node.engine.connect() as conn:
        figures = catalogue_figures(conn, NOW)
    assert figures.items_flagged == 2


def test_catalogue_figures_are_additive_counts(node: Node) -> None:
    load(
        node,
        [*items(), item(promised_limit="3", effective_from="20250305T000000"), acceptance("F-1", "20250306T100000")],
    )
    retire_item(node, "440112010", "取消", at=datetime(2025, 2, 10))
    with node.engine.connect() as conn:
        figures = catalogue_figures(conn, NOW)
    assert (figures.items, figures.items_in_force, figures.items_retired, figures.items_flagged) == (3, 2, 1, 0)
    # Latest versions of the two in force: 3 of 10 and 5 of 10.
    assert (figures.items_compared, figures.sum_promised, figures.sum_legal) == (2, 8, 20)
    assert figures.compression == pytest.approx(0.4)
    assert figures.departments == 1
    assert figures.retired_by_month == {"2025-02": 1}
    twice = type(figures)()
    twice.add(figures)
    twice.add(figures)
    assert (twice.items, twice.sum_promised, twice.retired_by_month) == (6, 16, {"2025-02": 2})


def test_migration_makes_every_item_version_one_from_the_beginning(node: Node, tmp_path: Path, db_url: str) -> None:
    load(node, items())
    names = ("items",)
    source = MetaData()
    source.reflect(node.engine, only=names)

    def upgrade(url: str) -> None:
        engine = make_engine(url)
        try:
            migrate(engine, "0009")
            old = MetaData()
            old.reflect(engine, only=names)
            columns = [c.name for c in old.tables["items"].columns]
            assert "version" not in columns
            with node.engine.connect() as read, engine.begin() as write:
                rows = [dict(r._mapping) for r in read.execute(select(*(source.tables["items"].c[c] for c in columns)))]
                write.execute(old.tables["items"].insert(), rows)
            migrate(engine)
            with engine.connect() as conn:
                versions = conn.execute(
                    select(
                        ItemVersion.implementation_code,
                        ItemVersion.version,
                        ItemVersion.effective_from,
                        ItemVersion.promised_limit,
                    ).order_by(ItemVersion.implementation_code)
                ).all()
                statuses = conn.execute(select(Item.status, Item.retired_at)).all()
            assert [(v.version, v.effective_from, v.promised_limit) for v in versions] == [(1, None, 5)] * 3
            assert statuses == [("in_force", None)] * 3
        finally:
            engine.dispose()

    if db_url.startswith("sqlite"):
        upgrade(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        with fresh_schema_url() as url:
            upgrade(url)


def test_whole_table_rules_run_at_the_first_scan_of_each_day_only(node: Node) -> None:
    """R14 over every item (like R12's window) is gated to the first scan of a day: later scans that day skip it."""
    load(node, items())
    morning = datetime(2025, 3, 21, 9, 0)
    assert "R14" not in run_scan(node, morning).by_rule  # the first scan of the day: nothing to flag yet

    def needs_flags() -> None:  # as an upgrade from 0009 leaves it: terms that need an explanation, no flag
        with node.engine.begin() as conn:
            conn.execute(ItemVersion.__table__.update().values(promised_limit=9))  # type: ignore[attr-defined]
            conn.execute(Item.__table__.update().values(promised_limit=9))  # type: ignore[attr-defined]

    needs_flags()
    assert "R14" not in run_scan(node, datetime(2025, 3, 21, 9, 5)).by_rule  # same day: the item pass is skipped
    assert "R14" not in run_scan(node, datetime(2025, 3, 21, 17, 0)).by_rule
    assert run_scan(node, datetime(2025, 3, 22, 0, 5)).by_rule["R14"] == 3  # the next day's first scan
    assert "R14" not in run_scan(node, datetime(2025, 3, 22, 0, 10)).by_rule
    assert run_scan(node, datetime(2025, 3, 22, 0, 15), full=True).by_rule.get("R14", 0) == 0  # all flagged already
