"""Event-driven rules on a real node fed through the real importer (SQLite and PostgreSQL): R05 step overdue, R06 fee
violation, R07 repeated supplement, R08 refusal without reason, R09 late entry, R02/R03 on a late completion — each
fires exactly when it should, once, and re-sending the same records raises nothing new."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from node.app import Node
from node.supervision import list_alerts, run_scan
from tests.harness.clocks import Clock
from tests.harness.rules import (
    FEE_ITEM_CODE,
    UNIT,
    Record,
    acceptance,
    alert_keys,
    assert_metrics_consistent,
    completion,
    items,
    load,
    make_node,
    step,
)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 20, 12, 0))


def step_ids(node: Node) -> dict[str, int]:
    from sqlalchemy import select

    from node.store import Step

    with node.engine.connect() as conn:
        return {row.step_name: row.id for row in conn.execute(select(Step.id, Step.step_name))}


def test_step_rules(node: Node) -> None:
    records: list[Record] = [
        *items(),
        acceptance("S-1"),
        # Step limit 1 working day from Mon 03-03: due end of Tue 03-04.
        step(
            "S-1",
            "受理审查",
            "pass",
            "20250303T100000",
            ended_at="20250305T100000",
            step_limit="1",
            post="窗口",
            opinion="同意",
        ),
        step("S-1", "初审", "pass", "20250305T100000", ended_at="20250306T170000", step_limit="1", opinion="同意"),
        # A return with no opinion (R08) and one with an opinion.
        step("S-1", "复审退回", "return", "20250306T170000", ended_at="20250306T180000", opinion="  "),
        step("S-1", "复审退回2", "return", "20250307T090000", ended_at="20250307T100000", opinion="缺少营业执照"),
        # Entered 4 days after it ended (R09 over 72 h) and one entered within a day.
        step(
            "S-1",
            "现场核查",
            "pass",
            "20250307T100000",
            ended_at="20250307T120000",
            opinion="ok",
            entered_at="20250311T130000",
        ),
        step(
            "S-1",
            "决定",
            "pass",
            "20250310T090000",
            ended_at="20250310T100000",
            opinion="ok",
            entered_at="20250310T180000",
        ),
    ]
    load(node, records)
    ids = step_ids(node)
    assert alert_keys(node) == [
        ("R05", f"case:S-1:step:{ids['受理审查']}"),
        ("R08", f"case:S-1:step:{ids['复审退回']}"),
        ("R09", f"case:S-1:step:{ids['现场核查']}"),
    ]
    with node.engine.connect() as conn:
        overdue_step = list_alerts(conn, rule_id="R05")[0]
        late = list_alerts(conn, rule_id="R09")[0]
    assert (overdue_step.severity, overdue_step.post, overdue_step.step_id) == ("reminder", "窗口", ids["受理审查"])
    assert (late.severity, late.department) == ("reminder", UNIT)
    # Re-sending the same steps is a no-op: no new alert.
    summary = load(node, records)
    assert summary.duplicates == len(records)
    assert len(alert_keys(node)) == 3
    assert_metrics_consistent(node)


def test_import_time_default_entry_is_not_a_late_entry(node: Node) -> None:
    # No 数据录入时间: the importer stamps the import time, which says nothing about when it was entered.
    load(node, [*items(), acceptance("S-2"), step("S-2", "初审", "pass", "20250303T100000", opinion="ok")])
    assert alert_keys(node) == []


def test_repeated_supplement_fires_once_on_the_second(node: Node) -> None:
    load(node, [*items(), acceptance("SUP"), step("SUP", "补正1", "supplement", "20250304T090000", opinion="缺材料")])
    assert alert_keys(node) == []
    load(node, [step("SUP", "补正2", "supplement", "20250305T090000", opinion="还缺材料")])
    assert alert_keys(node) == [("R07", "case:SUP")]
    load(node, [step("SUP", "补正3", "supplement", "20250306T090000", opinion="仍缺")])
    assert alert_keys(node) == [("R07", "case:SUP")]
    with node.engine.connect() as conn:
        card = list_alerts(conn, rule_id="R07")[0]
    assert card.severity == "yellow" and card.correct_by == datetime(2025, 3, 25, 23, 59, 59)
    assert_metrics_consistent(node)


def test_two_supplements_in_one_batch(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("SUP2"),
            step("SUP2", "补正1", "supplement", "20250304T090000", opinion="a"),
            step("SUP2", "补正2", "supplement", "20250305T090000", opinion="b"),
        ],
    )
    assert alert_keys(node) == [("R07", "case:SUP2")]
    assert_metrics_consistent(node)


def test_fee_violations(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("FREE"),
            acceptance("FEE-OK", implementation_code=FEE_ITEM_CODE),
            acceptance("FEE-HIGH", implementation_code=FEE_ITEM_CODE),
            ("payment", 0, {"case_no": "FREE", "amount": "10.00", "paid_at": "20250304T100000"}),
            ("payment", 0, {"case_no": "FEE-OK", "amount": "50.00", "paid_at": "20250304T100000"}),
            ("payment", 0, {"case_no": "FEE-HIGH", "amount": "50.01", "paid_at": "20250304T100000"}),
        ],
    )
    keys = alert_keys(node)
    assert [k[1].rsplit(":", 2)[0] for k in keys] == ["case:FEE-HIGH", "case:FREE"]
    assert all(rule == "R06" and ":payment:" in subject for rule, subject in keys)
    with node.engine.connect() as conn:
        assert {a.severity for a in list_alerts(conn, rule_id="R06")} == {"red"}
    assert_metrics_consistent(node)


def test_refusal_without_reason(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("R-1"),
            acceptance("R-2"),
            acceptance("R-3"),
            acceptance("R-4"),
            completion("R-1", "20250305T100000", result_code="2"),
            completion("R-2", "20250305T100000", result_code="3", reason=""),
            completion("R-3", "20250305T100000", result_code="2", reason="不符合法定条件"),
            completion("R-4", "20250305T100000", result_code="1"),
        ],
    )
    assert alert_keys(node) == [("R08", "case:R-1"), ("R08", "case:R-2")]
    assert_metrics_consistent(node)


def test_late_completion_raises_promise_and_law_cards_once(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("ON-TIME"),
            acceptance("LATE"),
            acceptance("VERY-LATE"),
            acceptance("SCANNED"),
        ],
    )
    run_scan(node, datetime(2025, 3, 11, 9))  # SCANNED (and the others) get their R02 while open
    load(
        node,
        [
            completion("ON-TIME", "20250310T235959"),
            completion("LATE", "20250311T100000"),
            completion("VERY-LATE", "20250318T100000"),
            completion("SCANNED", "20250318T100000"),
        ],
    )
    keys = [k for k in alert_keys(node) if k[0] in ("R02", "R03")]
    assert keys == [
        ("R02", "case:LATE"),
        ("R02", "case:ON-TIME"),
        ("R02", "case:SCANNED"),
        ("R02", "case:VERY-LATE"),
        ("R03", "case:SCANNED"),
        ("R03", "case:VERY-LATE"),
    ]
    assert_metrics_consistent(node)


def test_disabled_rule_raises_nothing(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(
        tmp_path,
        db_url,
        clock,
        {"rules": {"R08": {"enabled": False}}, "item_types": {"01": {"R06": {"enabled": False}}}},
    )
    load(
        node,
        [
            *items(),
            acceptance("X"),
            completion("X", "20250305T100000", result_code="2"),
            acceptance("Y"),
            ("payment", 0, {"case_no": "Y", "amount": "10.00", "paid_at": "20250304T100000"}),
        ],
    )
    assert alert_keys(node) == []
    node.close()


def test_pending_step_past_its_limit_at_import_fires_once(node: Node) -> None:
    # The clock is Thu 03-20 12:00. Step limits count working days from the step's start day.
    records: list[Record] = [
        *items(),
        acceptance("P-1"),
        # Pending since Mon 03-10 with a 2-day limit: due end of Wed 03-12, long past -> R05 now.
        step("P-1", "初审", "pass", "20250310T090000", status_code="1", step_limit="2", post="初审岗"),
        # Pending since Wed 03-19 with a 3-day limit: due end of Mon 03-24, not yet -> nothing now.
        step("P-1", "复审", "pass", "20250319T090000", status_code="1", step_limit="3"),
        # A pending step without a limit is never overdue; one with no status code counts as done (A.x default 2).
        step("P-1", "会签", "pass", "20250303T100000", status_code="1"),
        step("P-1", "归档", "pass", "20250303T100000", step_limit="1"),
    ]
    load(node, [*items(), acceptance("P-DONE"), completion("P-DONE", "20250305T100000")])
    # Pending past its limit, but its case is already completed: no reminder about a closed case.
    records.append(step("P-DONE", "收件", "pass", "20250304T090000", status_code="1", step_limit="1"))
    load(node, records)
    ids = step_ids(node)
    assert alert_keys(node) == [("R05", f"case:P-1:step:{ids['初审']}")]
    with node.engine.connect() as conn:
        reminder = list_alerts(conn, rule_id="R05")[0]
    assert (reminder.severity, reminder.post, reminder.step_id) == ("reminder", "初审岗", ids["初审"])
    assert "pending" in reminder.message and "2025-03-12 23:59" in reminder.message
    # Re-sending is a duplicate; a scan finds nothing new until the second step's due passes.
    assert load(node, records).duplicates == len(records)
    assert run_scan(node, datetime(2025, 3, 24, 23, 0)).by_rule.get("R05") is None
    assert run_scan(node, datetime(2025, 3, 25, 9, 0)).by_rule == {"R05": 1}
    assert run_scan(node, datetime(2025, 3, 26, 9, 0)).by_rule.get("R05") is None
    assert run_scan(node, datetime(2025, 3, 26, 9, 0), full=True).by_rule.get("R05") is None
    reminders = [key for key in alert_keys(node) if key[0] == "R05"]
    assert reminders == [("R05", f"case:P-1:step:{ids['初审']}"), ("R05", f"case:P-1:step:{ids['复审']}")]
    assert_metrics_consistent(node)


def test_completion_fee_flag_fires_r06_once_per_case(node: Node) -> None:
    records: list[Record] = [
        *items(),
        # Free item, completion says fees were charged (no payment record at all).
        acceptance("CF-FREE"),
        completion("CF-FREE", "20250305T100000", fee_flag="1"),
        # Fee item (standard 50.00): two payments of 30 are each within the standard, 60 in total is not.
        acceptance("CF-OVER", implementation_code=FEE_ITEM_CODE),
        ("payment", 0, {"case_no": "CF-OVER", "amount": "30.00", "paid_at": "20250304T100000"}),
        ("payment", 0, {"case_no": "CF-OVER", "amount": "30.00", "paid_at": "20250304T110000"}),
        completion("CF-OVER", "20250305T100000", fee_flag="1"),
        # Fee item paid exactly the standard: nothing.
        acceptance("CF-OK", implementation_code=FEE_ITEM_CODE),
        ("payment", 0, {"case_no": "CF-OK", "amount": "50.00", "paid_at": "20250304T100000"}),
        completion("CF-OK", "20250305T100000", fee_flag="1"),
        # Free item, a payment already raised R06: the completion adds no second card for the same charge.
        acceptance("CF-PAID"),
        ("payment", 0, {"case_no": "CF-PAID", "amount": "20.00", "paid_at": "20250304T100000"}),
        completion("CF-PAID", "20250305T100000", fee_flag="1"),
        # Free item, completion says no fee: nothing.
        acceptance("CF-NONE"),
        completion("CF-NONE", "20250305T100000", fee_flag="0"),
    ]
    load(node, records)
    keys = alert_keys(node)
    assert [subject for _, subject in keys if not subject.startswith("case:CF-PAID:payment:")] == [
        "case:CF-FREE:completion",
        "case:CF-OVER:completion",
    ]
    assert {rule for rule, _ in keys} == {"R06"} and len(keys) == 3
    with node.engine.connect() as conn:
        cards = {a.subject: a for a in list_alerts(conn, rule_id="R06")}
    assert cards["case:CF-OVER:completion"].severity == "red"
    assert "60.00" in cards["case:CF-OVER:completion"].message
    assert load(node, records).duplicates == len(records)
    assert len(alert_keys(node)) == 3
    assert_metrics_consistent(node)
