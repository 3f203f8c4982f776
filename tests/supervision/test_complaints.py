"""Complaints: decision deadlines in working days (holidays, adjusted workdays, missing years), the lifecycle,
its errors, the conclusion metrics, overdue figures and the CLI — on a real node fed through the real importer."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from node.app import Node, open_node
from node.cli import complaints_cmd
from node.cli.common import console
from node.config import CalendarConfig, NodeConfig, StoreConfig, SupervisionConfig, save_config
from node.errors import ExitCode, InvalidStateError, NotFoundError, ValidationError
from node.ingest import Importer
from node.notify import NotificationDispatcher, list_notifications
from node.store import MetricBucket
from node.supervision import (
    accept_complaint,
    assign_missing_decision_deadlines,
    complaint_figures,
    complaint_listeners,
    conclude_complaint,
    decline_complaint,
    get_complaint,
    handle_complaint,
    list_complaints,
    run_scan,
)

ITEM = {
    "implementation_code": "440112001",
    "basic_code": "000101001",
    "name": "食品经营许可",
    "type_code": "01",
    "level_code": "4",
    "body_name": "黄埔区市场监督管理局",
    "body_code": "11440112MB2C12345X",
    "legal_limit": "20",
    "promised_limit": "10",
    "fee_flag": "0",
}
UNIT = "黄埔区市场监督管理局"


def complaint(no: str, received_at: str, **extra: str) -> tuple[str, int, dict[str, str]]:
    fields = {"complaint_no": no, "title": "办理拖延", "respondent_unit": UNIT, "received_at": received_at, **extra}
    return ("complaint", 0, fields)


def make_node(data_dir: Path, db_url: str, **config: Any) -> Node:
    save_config(data_dir, NodeConfig(id="gd.gz.hp", store=StoreConfig(url=db_url), **config))
    return open_node(data_dir)


def load(node: Node, records: list[tuple[str, int, dict[str, str]]]) -> None:
    summary = Importer(node, listeners=complaint_listeners(node)).import_records(records)
    assert summary.rejected == 0, summary.errors


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    opened = make_node(tmp_path, db_url)
    load(
        opened,
        [
            ("item", 1, ITEM),
            (
                "acceptance",
                2,
                {
                    "case_no": "HP-1",
                    "implementation_code": "440112001",
                    "department": UNIT,
                    "accepted_at": "20250303T100000",
                },
            ),
            # Received the day before the National Day holiday (Oct 1–8, 2025; Sat Oct 11 is a working day).
            complaint("TS-HOLIDAY", "20250930T160000", case_no="HP-1"),
            complaint("TS-WEEK", "20250303T090000"),
            complaint("TS-FRIDAY", "20250307T235959"),
        ],
    )
    yield opened
    opened.close()


def test_decision_due_after_five_working_days_across_a_holiday(node: Node) -> None:
    due = {v.complaint_no: v.decision_due_at for v in list_complaints(node, now=datetime(2025, 1, 1))}
    # Oct 9, 10, 11 (adjusted Saturday), 13, 14: the fifth working day ends Oct 14 at 23:59:59.
    assert due["TS-HOLIDAY"] == datetime(2025, 10, 14, 23, 59, 59)
    # A Monday complaint: Tue..Fri, then Monday — weekends do not count.
    assert due["TS-WEEK"] == datetime(2025, 3, 10, 23, 59, 59)
    # Received one second before midnight on a Friday: counting starts the next working day (Monday).
    assert due["TS-FRIDAY"] == datetime(2025, 3, 14, 23, 59, 59)


def test_decision_workdays_come_from_config(tmp_path: Path) -> None:
    node = make_node(
        tmp_path, f"sqlite:///{tmp_path}/node.db", supervision=SupervisionConfig(complaint_decision_workdays=2)
    )
    load(node, [complaint("TS-1", "20250930T100000")])
    assert get_complaint(node, "TS-1").decision_due_at == datetime(2025, 10, 10, 23, 59, 59)
    node.close()


def test_year_without_holiday_data_gets_no_guessed_deadline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = make_node(tmp_path, f"sqlite:///{tmp_path}/node.db")
    with caplog.at_level(logging.WARNING):
        load(node, [complaint("TS-2030", "20300104T100000")])  # imported all the same
    assert get_complaint(node, "TS-2030").decision_due_at is None
    assert any("TS-2030" in r.getMessage() and "no holiday data for 2030" in r.getMessage() for r in caplog.records)
    assert complaint_figures(node, now=datetime(2030, 2, 1)).no_deadline == 1
    node.close()

    # The operator adds 2030 to a holiday file; the missing deadline is then stamped from it.
    (tmp_path / "holidays.toml").write_text('[2030]\nholidays = ["2030-01-01", "2030-01-07"]\n', encoding="utf-8")
    node = make_node(tmp_path, f"sqlite:///{tmp_path}/node.db", calendar=CalendarConfig(holidays_file="holidays.toml"))
    assert assign_missing_decision_deadlines(node) == 1
    # Fri Jan 4 → Jan 8, 9, 10, 11 (Jan 7 is a holiday in the file), 14.
    assert get_complaint(node, "TS-2030").decision_due_at == datetime(2030, 1, 14, 23, 59, 59)
    node.close()


def bucket(node: Node, implementation_code: str) -> Any:
    with node.engine.connect() as conn:
        return (
            conn.execute(
                select(MetricBucket).where(
                    MetricBucket.department == UNIT, MetricBucket.implementation_code == implementation_code
                )
            )
            .mappings()
            .all()
        )


def test_full_lifecycle_and_conclusion_metrics(node: Node) -> None:
    accepted = accept_complaint(node, "TS-HOLIDAY", by="王科长", now=datetime(2025, 10, 9, 9, 0))
    assert (accepted.status, accepted.handler, accepted.decided_at) == ("accepted", "王科长", datetime(2025, 10, 9, 9))
    # Handling due 15 working days after the decision day (Sat Oct 11 is one of them).
    assert accepted.handling_due_at == datetime(2025, 10, 29, 23, 59, 59)
    handled = handle_complaint(node, "TS-HOLIDAY", "已电话回复并督促办结", now=datetime(2025, 10, 20, 9, 0))
    assert (handled.status, handled.feedback) == ("handled", "已电话回复并督促办结")
    concluded = conclude_complaint(
        node, "TS-HOLIDAY", "substantiated", "对窗口人员诫勉谈话", now=datetime(2025, 10, 21, 15, 0)
    )
    assert (concluded.status, concluded.finding, concluded.accountability_measure) == (
        "concluded",
        "substantiated",
        "对窗口人员诫勉谈话",
    )
    assert concluded.concluded_at == datetime(2025, 10, 21, 15, 0)

    # Counted on the concluded day, for the respondent unit and the linked case's item.
    [row] = [r for r in bucket(node, "440112001") if r["complaints_concluded"]]
    assert row["day"].isoformat() == "2025-10-21"
    assert (row["complaints_concluded"], row["complaints_substantiated"]) == (1, 1)
    assert (row["basic_code"], row["item_type_code"]) == ("000101001", "01")

    # Without a linked case: the "" item; unsubstantiated counts as concluded only.
    accept_complaint(node, "TS-WEEK", now=datetime(2025, 3, 4, 9))
    handle_complaint(node, "TS-WEEK", "已答复", now=datetime(2025, 3, 5, 9))
    conclude_complaint(node, "TS-WEEK", "unsubstantiated", now=datetime(2025, 3, 6, 9))
    [row] = [r for r in bucket(node, "") if r["complaints_concluded"]]
    assert (row["day"].isoformat(), row["complaints_concluded"], row["complaints_substantiated"]) == (
        "2025-03-06",
        1,
        0,
    )


def test_illegal_transitions_and_bad_input(node: Node) -> None:
    with pytest.raises(NotFoundError, match="TS-NONE"):
        accept_complaint(node, "TS-NONE")
    with pytest.raises(ValidationError, match="field 'reason'") as missing_reason:
        decline_complaint(node, "TS-WEEK", "   ")
    assert missing_reason.value.field == "reason"
    with pytest.raises(InvalidStateError, match="TS-WEEK is received: cannot handle"):
        handle_complaint(node, "TS-WEEK", "x")
    with pytest.raises(InvalidStateError, match="cannot conclude"):
        conclude_complaint(node, "TS-WEEK", "substantiated")
    with pytest.raises(ValidationError, match="before received_at"):
        accept_complaint(node, "TS-WEEK", now=datetime(2025, 3, 2, 9))

    declined = decline_complaint(node, "TS-WEEK", "不属于效能投诉受理范围", now=datetime(2025, 3, 4, 9))
    assert (declined.status, declined.decision_reason) == ("declined", "不属于效能投诉受理范围")
    with pytest.raises(InvalidStateError, match="TS-WEEK is declined: cannot accept"):
        accept_complaint(node, "TS-WEEK")

    accept_complaint(node, "TS-FRIDAY", now=datetime(2025, 3, 10, 9))
    with pytest.raises(InvalidStateError, match="cannot accept"):
        accept_complaint(node, "TS-FRIDAY")
    with pytest.raises(ValidationError, match="field 'feedback'"):
        handle_complaint(node, "TS-FRIDAY", "")
    handle_complaint(node, "TS-FRIDAY", "已处理", now=datetime(2025, 3, 11, 9))
    with pytest.raises(ValidationError, match="field 'finding'"):
        conclude_complaint(node, "TS-FRIDAY", "maybe")
    # A failed transition changed nothing.
    assert get_complaint(node, "TS-FRIDAY").status == "handled"


def test_overdue_listing_and_closure_figures(node: Node) -> None:
    accept_complaint(node, "TS-WEEK", now=datetime(2025, 3, 4, 9))  # handling due 15 working days later: Mar 25
    as_of = datetime(2025, 3, 26, 9)
    overdue = {v.complaint_no: v.overdue for v in list_complaints(node, overdue_only=True, now=as_of)}
    # TS-FRIDAY's decision was due Mar 14; TS-HOLIDAY (received in September) is not due yet.
    assert overdue == {"TS-WEEK": "handling", "TS-FRIDAY": "decision"}
    assert list_complaints(node, overdue_only=True, now=datetime(2025, 3, 14, 23, 59, 59)) == []

    handle_complaint(node, "TS-WEEK", "已答复", now=as_of)
    conclude_complaint(node, "TS-WEEK", "substantiated", "通报批评", now=as_of)
    figures = complaint_figures(node, now=as_of)
    assert figures.received == 3 and figures.concluded == 1
    assert figures.by_status == {"received": 2, "accepted": 0, "declined": 0, "handled": 0, "concluded": 1}
    assert (figures.substantiated, figures.with_accountability) == (1, 1)
    assert (figures.decision_overdue, figures.handling_overdue) == (1, 0)
    # 受理率 = accepted / received; 办结率 = concluded / accepted (docs/domain.md §6).
    assert (figures.accepted, figures.acceptance_rate, figures.closure_rate) == (1, pytest.approx(1 / 3), 1.0)

    # A declined complaint is received but never accepted: it lowers 受理率 and stays out of 办结率's denominator.
    decline_complaint(node, "TS-FRIDAY", "不属于效能投诉受理范围", now=as_of)
    figures = complaint_figures(node, now=as_of)
    assert (figures.received, figures.accepted, figures.concluded) == (3, 1, 1)
    assert (figures.acceptance_rate, figures.closure_rate) == (pytest.approx(1 / 3), 1.0)
    assert figures.as_dict()["closure_rate"] == 1.0
    # The buckets say the same: accepted on the decision day, none for the declined one.
    accepted_rows = [r for r in bucket(node, "") if r["complaints_accepted"]]
    assert [(r["day"].isoformat(), r["complaints_accepted"]) for r in accepted_rows] == [("2025-03-04", 1)]


def test_own_promised_limit_and_extension_set_the_handling_deadline(tmp_path: Path) -> None:
    node = make_node(tmp_path, f"sqlite:///{tmp_path}/node.db")
    load(node, [complaint("TS-LIMIT", "20250303T090000", promised_limit="3", extension_workdays="2")])
    view = accept_complaint(node, "TS-LIMIT", now=datetime(2025, 3, 4, 9))
    # 3 + 2 working days after Tue Mar 4: Wed, Thu, Fri, Mon, Tue.
    assert view.handling_due_at == datetime(2025, 3, 11, 23, 59, 59)
    node.close()


def test_overdue_decision_is_alerted_and_notified(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    # The rule engine's scan raises R10 for complaints still 'received' after their decision deadline.
    scan = run_scan(node, now=datetime(2025, 3, 11, 9))
    assert [(a.draft.rule_id, a.draft.complaint_no) for a in scan.raised] == [("R10", "TS-WEEK")]
    with caplog.at_level(logging.WARNING, logger="supnet.notify"):
        result = NotificationDispatcher(node).run_once(datetime(2025, 3, 11, 9, 1))
    assert (result.delivered, result.alerts_notified) == (1, 1)
    [sent] = list_notifications(node)
    assert sent.status == "delivered" and "TS-WEEK" in sent.subject
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "supnet.notify")
    assert "投诉编号 Complaint: TS-WEEK" in logged and "受理决定期限 Decision due: 2025-03-10 23:59" in logged


def cli_app() -> typer.Typer:
    app = typer.Typer()
    complaints_cmd.register(app)
    return app


def test_cli_list_accept_conclude(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 200)  # a wide terminal, so table cells are not wrapped
    runner = CliRunner()
    app = cli_app()
    data_dir = str(node.data_dir)
    result = runner.invoke(app, ["complaints", "-d", data_dir, "--now", "2025-03-26T09:00:00", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [c["complaint_no"] for c in listed["complaints"]] == ["TS-WEEK", "TS-FRIDAY", "TS-HOLIDAY"]
    assert listed["figures"]["decision_overdue"] == 2 and listed["figures"]["closure_rate"] is None

    table = runner.invoke(app, ["complaints", "-d", data_dir, "--overdue", "--now", "20250326T090000"])
    assert table.exit_code == 0, table.output
    assert "TS-WEEK" in table.stdout and "TS-HOLIDAY" not in table.stdout and "decision" in table.stdout

    steps = [
        ["accept", "TS-WEEK", "--by", "李四", "--at", "20250304T090000"],
        ["handle", "TS-WEEK", "--feedback", "已答复", "--at", "20250305T090000"],
        ["conclude", "TS-WEEK", "--finding", "substantiated", "--measure", "诫勉谈话", "--at", "20250306T090000"],
    ]
    for args in steps:
        outcome = runner.invoke(app, ["complaints", *args, "-d", data_dir, "--json"])
        assert outcome.exit_code == 0, outcome.output
    shown = json.loads(runner.invoke(app, ["complaints", "show", "TS-WEEK", "-d", data_dir, "--json"]).stdout)
    assert (shown["status"], shown["finding"], shown["handler"]) == ("concluded", "substantiated", "李四")

    again = runner.invoke(app, ["complaints", "accept", "TS-WEEK", "-d", data_dir])
    assert again.exit_code == ExitCode.CONFLICT and "INVALID_STATE" in again.stderr
    unknown = runner.invoke(app, ["complaints", "-d", data_dir, "decline", "TS-NONE", "--reason", "x"])
    assert unknown.exit_code == ExitCode.NOT_FOUND and "TS-NONE" in unknown.stderr and "NOT_FOUND" in unknown.stderr


def test_a_complaint_stored_before_its_case_moves_to_the_case_item_when_the_case_arrives(
    tmp_path: Path, db_url: str
) -> None:
    from node.supervision import check_buckets, default_listeners

    node = make_node(tmp_path, db_url)
    try:
        importer = Importer(node, listeners=default_listeners(node))
        first = importer.import_records([("item", 1, ITEM), complaint("TS-EARLY", "20250304T090000", case_no="HP-9")])
        assert first.rejected == 0, first.errors
        accept_complaint(node, "TS-EARLY", now=datetime(2025, 3, 5, 9))
        assert sum(r["complaints_received"] for r in bucket(node, "")) == 1  # no case yet: the "" item
        case = {
            "case_no": "HP-9",
            "implementation_code": "440112001",
            "department": UNIT,
            "accepted_at": "20250303T1000",
        }
        second = importer.import_records([("acceptance", 2, {**case, "accepted_at": "20250303T100000"})])
        assert second.rejected == 0, second.errors
        assert check_buckets(node) == []
        moved = {
            r["day"].isoformat(): r
            for r in bucket(node, "440112001")
            if r["complaints_received"] or r["complaints_accepted"]
        }
        assert (moved["2025-03-04"]["complaints_received"], moved["2025-03-05"]["complaints_accepted"]) == (1, 1)
        assert all(not (r["complaints_received"] or r["complaints_accepted"]) for r in bucket(node, ""))
    finally:
        node.close()
