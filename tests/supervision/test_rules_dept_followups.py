"""R12 (退件率较高: a department's 30-day return rate above the threshold) and R13 (an evaluation follow-up still open
past its deadline) in the periodic scan of a real node, on SQLite and PostgreSQL: when they fire, their breach
moment, once per department and month / per follow-up, the follow-up deadline stamped on import and on older rows,
closing the follow-up as the correction, and the metric buckets consistent throughout."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from pathlib import Path

import pytest
import typer
from sqlalchemy import select, update
from typer.testing import CliRunner

from node.cli import evaluations_cmd
from node.store import Evaluation
from node.supervision import (
    close_followup,
    department_period_subject,
    evaluation_subject,
    followup_due_for,
    list_alerts,
    maintained_buckets,
    run_scan,
)
from tests.harness.clocks import Clock
from tests.harness.rules import (
    ITEM_CODE,
    OTHER_UNIT,
    UNIT,
    Record,
    acceptance,
    assert_metrics_consistent,
    completion,
    items,
    load,
    make_node,
    step,
)

R12_SETTINGS = {"return_rate_threshold": 0.25, "return_rate_min_received": 4}


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 3, 12, 0))


def returned(case_no: str, started_at: str) -> Record:
    return step(case_no, "审查", "return", started_at, opinion="材料不全", handler="王五", post="审查岗")


def evaluation(case_no: str, rating: int, evaluated_at: str = "20250303T120000") -> Record:
    fields = {"case_no": case_no, "evaluated_at": evaluated_at, "satisfaction_code": str(rating), "channel": "app"}
    return ("evaluation", 0, fields)


def rated(case_no: str, rating: int) -> list[Record]:
    """A case accepted Mon 03-03 10:00, completed at 11:00 (only a completed case is rated) and rated at 12:00."""
    return [acceptance(case_no), completion(case_no, "20250303T110000"), evaluation(case_no, rating)]


def test_high_return_rate_raises_one_card_per_department_and_month_dated_when_crossed(
    tmp_path: Path, db_url: str, clock: Clock
) -> None:
    node = make_node(tmp_path, db_url, clock, R12_SETTINGS)
    try:
        load(
            node,
            [
                *items(),
                *(acceptance(f"A-{n}") for n in range(1, 5)),
                *(acceptance(f"B-{n}", department=OTHER_UNIT) for n in range(1, 5)),
                # A small department: every case returned, but fewer than the minimum received.
                *(acceptance(f"S-{n}", department="小窗口") for n in range(1, 4)),
                *(returned(f"S-{n}", "20250304T090000") for n in range(1, 4)),
                returned("A-1", "20250304T090000"),
                returned("B-1", "20250304T090000"),
            ],
        )
        # 1 of 4 = 25%: not above the threshold.
        assert "R12" not in run_scan(node, datetime(2025, 3, 5, 12)).by_rule
        # A return that happened on 03-05 but is imported on 03-10 makes the rate cross on 03-05: 2 of 4.
        load(node, [returned("A-2", "20250305T090000")])
        assert run_scan(node, datetime(2025, 3, 10, 12)).by_rule.get("R12") == 1
        with node.engine.connect() as conn:
            [card] = list_alerts(conn, rule_id="R12")
        assert card.subject == department_period_subject(UNIT, date(2025, 3, 1)) == f"dept:{UNIT}:2025-03"
        assert (card.department, card.severity, card.implementation_code) == (UNIT, "yellow", "")
        assert card.breached_at == datetime.combine(date(2025, 3, 5), time.max)
        assert card.raised_at == datetime(2025, 3, 10, 12)
        assert card.correct_by is not None
        assert "50.0% (2/4)" in card.message and "诫勉谈话" in card.message
        # Once per department and month.
        assert "R12" not in run_scan(node, datetime(2025, 3, 11, 12)).by_rule
        # A new month: the 30-day window ending 04-01 still holds the March cases (03-03 … 04-01) — a new card,
        # crossed on the scan's own day, so dated at the scan.
        assert run_scan(node, datetime(2025, 4, 1, 9)).by_rule.get("R12") == 1
        with node.engine.connect() as conn:
            april = [a for a in list_alerts(conn, rule_id="R12") if a.subject.endswith("2025-04")]
            buckets = maintained_buckets(conn)
        assert [a.breached_at for a in april] == [datetime(2025, 4, 1, 9)]
        # The cards count on their breach days (alert_deltas), under the department with no item.
        assert buckets[(date(2025, 3, 5), UNIT, "")]["yellow_cards"] == 1
        assert buckets[(date(2025, 4, 1), UNIT, "")]["yellow_cards"] == 1
        assert_metrics_consistent(node)
    finally:
        node.close()


def test_return_rate_rule_can_be_disabled_and_respects_the_window(tmp_path: Path, db_url: str, clock: Clock) -> None:
    settings = {**R12_SETTINGS, "return_rate_window_days": 7, "rules": {"R12": {"enabled": False}}}
    node = make_node(tmp_path, db_url, clock, settings)
    try:
        load(node, [*items(), *(acceptance(f"A-{n}") for n in range(1, 5)), returned("A-1", "20250304T090000")])
        load(node, [returned("A-2", "20250304T100000")])
        assert "R12" not in run_scan(node, datetime(2025, 3, 5, 12)).by_rule
    finally:
        node.close()
    node = make_node(tmp_path, db_url, clock, {**R12_SETTINGS, "return_rate_window_days": 7})
    try:
        # Enabled with a 7-day window: on 03-10 (window 03-04 … 03-10) the 03-03 cases are outside it — nothing in
        # March's later days, but 03-04 … 03-09 still hold them: the card is dated on the first day crossed (03-04).
        assert run_scan(node, datetime(2025, 3, 10, 12)).by_rule.get("R12") == 1
        with node.engine.connect() as conn:
            [card] = list_alerts(conn, rule_id="R12")
        assert card.breached_at == datetime.combine(date(2025, 3, 4), time.max)
        # April: the window ending any April day holds none of the March cases (below the minimum): no card.
        assert "R12" not in run_scan(node, datetime(2025, 4, 2, 12)).by_rule
        assert_metrics_consistent(node)
    finally:
        node.close()


def test_followups_get_a_deadline_and_r13_fires_when_it_passes(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(tmp_path, db_url, clock, {"evaluation_followup_workdays": 3})
    try:
        load(
            node,
            [
                *items(),
                *rated("E-1", 5),
                *rated("E-2", 4),
                *rated("E-3", 2),
                *rated("E-4", 4),
            ],
        )
        with node.engine.connect() as conn:
            rows = {r.case_no: r for r in conn.execute(select(Evaluation)).all()}
        # Mon 03-03 + 3 working days: end of Thu 03-06, the node calendar's deadline.
        due = followup_due_for(node.calendar, datetime(2025, 3, 3, 12), 3)
        assert due.date() == date(2025, 3, 6)
        assert rows["E-1"].followup_due_at == rows["E-2"].followup_due_at == due
        assert rows["E-3"].followup_due_at is None and rows["E-3"].followup_status == "none"
        # A follow-up closed in time never gets a card.
        close_followup(node, rows["E-4"].id, "已电话回访", now=datetime(2025, 3, 5, 9))
        assert "R13" not in run_scan(node, datetime(2025, 3, 6, 23)).by_rule
        assert run_scan(node, datetime(2025, 3, 7, 8)).by_rule.get("R13") == 2
        with node.engine.connect() as conn:
            cards = {a.subject: a for a in list_alerts(conn, rule_id="R13")}
        card = cards[evaluation_subject(rows["E-1"].id)]
        assert (card.case_no, card.department, card.implementation_code) == ("E-1", UNIT, ITEM_CODE)
        assert (card.severity, card.breached_at, card.raised_at) == ("yellow", due, datetime(2025, 3, 7, 8))
        assert "R13" not in run_scan(node, datetime(2025, 3, 7, 9)).by_rule
        # Closing the follow-up is the correction of its card; the other card stays open.
        close_followup(node, rows["E-1"].id, "已上门回访并致歉", now=datetime(2025, 3, 7, 10))
        with node.engine.connect() as conn:
            statuses = {a.subject: (a.status, a.correction_note) for a in list_alerts(conn, rule_id="R13")}
        note = "回访已完成 follow-up closed: 已上门回访并致歉"
        assert statuses[evaluation_subject(rows["E-1"].id)] == ("corrected", note)
        assert statuses[evaluation_subject(rows["E-2"].id)][0] == "raised"
        with node.engine.connect() as conn:
            buckets = maintained_buckets(conn)
        assert buckets[(date(2025, 3, 6), UNIT, ITEM_CODE)]["yellow_cards"] == 2
        assert_metrics_consistent(node)
    finally:
        node.close()


def test_open_followups_without_a_deadline_get_one_at_the_next_scan(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(tmp_path, db_url, clock)
    try:
        load(node, [*items(), *rated("E-1", 5)])
        # As stored before migration 0009: open, no deadline.
        with node.engine.begin() as conn:
            conn.execute(update(Evaluation).values(followup_due_at=None))
        # Default 5 working days after Mon 03-03: end of Mon 03-10; the scan on 03-11 stamps it and finds it late.
        assert run_scan(node, datetime(2025, 3, 11, 8)).by_rule.get("R13") == 1
        with node.engine.connect() as conn:
            stored = conn.execute(select(Evaluation.followup_due_at)).scalar_one()
            [card] = list_alerts(conn, rule_id="R13")
        assert stored == followup_due_for(node.calendar, datetime(2025, 3, 3, 12), 5)
        assert stored.date() == date(2025, 3, 10)
        assert card.breached_at == stored
        assert_metrics_consistent(node)
    finally:
        node.close()


def test_evaluations_cli_closes_the_followup_and_its_card(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(tmp_path, db_url, clock)
    try:
        load(node, [*items(), *rated("E-1", 5)])
        run_scan(node, datetime(2025, 3, 11, 8))
    finally:
        node.close()
    app = typer.Typer()
    evaluations_cmd.register(app)
    runner = CliRunner()
    listed = runner.invoke(app, ["evaluations", "-d", str(tmp_path), "--open-followups", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)["evaluations"]
    assert row["followup_due_at"] == "2025-03-10T23:59:59+08:00"
    closed = runner.invoke(app, ["evaluations", "close", str(row["id"]), "-d", str(tmp_path), "--note", "已回访"])
    assert closed.exit_code == 0, closed.output
    node = make_node(tmp_path, db_url, clock)
    try:
        with node.engine.connect() as conn:
            [card] = list_alerts(conn, rule_id="R13")
        assert card.status == "corrected"
    finally:
        node.close()
