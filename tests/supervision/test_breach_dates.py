"""Cards are dated by breach, not by detection (docs/domain.md §5), on SQLite and PostgreSQL: March 2025 history
imported and scanned in April gives every rule's card the moment its rule was broken, while raised_at keeps when
supnet noticed it; the card counters of the buckets land on the breach days, ``metrics check`` stays clean, and
``supnet alerts`` shows both times (table, and --json with the node's UTC offset)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from node.app import Node
from node.cli import alerts_cmd
from node.cli.common import console
from node.supervision import AlertView, grouped_stats, list_alerts, run_scan
from tests.harness.clocks import Clock
from tests.harness.rules import (
    FEE_ITEM_CODE,
    Record,
    acceptance,
    assert_metrics_consistent,
    completion,
    items,
    load,
    step,
)

IMPORTED = datetime(2025, 4, 15, 10, 0)  # the history arrives six weeks late
END_OF = datetime.max.time().replace(microsecond=0)


def end_of(day: date) -> datetime:
    return datetime.combine(day, END_OF)


@pytest.fixture
def clock() -> Clock:
    return Clock(IMPORTED)


def history() -> list[Record]:
    return [
        *items(),
        # Completed late: promised due end of Mon 03-10, legal due end of Mon 03-17 (R02, R03).
        acceptance("LATE"),
        completion("LATE", "20250318T100000"),
        # A step past its 1-day limit (due end of Tue 03-04: R05), a return without an opinion (R08, at its end),
        # a step entered four days after it happened (R09, at the step's own time).
        step("LATE", "受理审查", "pass", "20250303T100000", ended_at="20250305T100000", step_limit="1", opinion="ok"),
        step("LATE", "复审退回", "return", "20250306T170000", ended_at="20250306T180000", opinion=" "),
        step(
            "LATE", "现场核查", "pass", "20250307T100000", ended_at="20250307T120000", entered_at="20250311T130000"
        ),
        # Three supplement requests in one batch, out of order: R07 is broken by the second (03-05 09:00).
        acceptance("SUP"),
        step("SUP", "补正3", "supplement", "20250306T090000", opinion="c"),
        step("SUP", "补正1", "supplement", "20250304T090000", opinion="a"),
        step("SUP", "补正2", "supplement", "20250305T090000", opinion="b"),
        # R06 from a payment on a no-fee item, and from a completion declaring fees on one.
        acceptance("FREE"),
        ("payment", 0, {"case_no": "FREE", "amount": "10.00", "paid_at": "20250304T100000"}),
        acceptance("CF-FREE"),
        completion("CF-FREE", "20250305T110000", fee_flag="1"),
        acceptance("FEE-OK", implementation_code=FEE_ITEM_CODE),
        # A refusal without a reason (R08, at the refusing completion).
        acceptance("REFUSED"),
        completion("REFUSED", "20250305T100000", result_code="2"),
        # Still open: the scan finds it past both limits (R02, R03 at those dues).
        acceptance("OPEN"),
        # Due end of Tue 04-15, within one working day at the scan: R01 from the start of Mon 04-14.
        acceptance("SOON", accepted_at="20250408T100000"),
        # A complaint never decided: R10 at its decision due (5 working days: end of Mon 03-10).
        ("complaint", 0, {"complaint_no": "TS-1", "title": "拖延", "respondent_unit": "黄埔区市场监督管理局",
                          "received_at": "20250303T100000"}),
    ]  # fmt: skip


def by_rule(node: Node) -> dict[tuple[str, str], AlertView]:
    with node.engine.connect() as conn:
        return {(a.rule_id, a.subject): a for a in list_alerts(conn, limit=None)}


def test_every_rule_dates_its_card_by_the_breach(node: Node, clock: Clock) -> None:
    load(node, history())
    run_scan(node, IMPORTED)
    alerts = by_rule(node)
    breach = {key: alert.breached_at for key, alert in alerts.items()}
    steps = {a.message.split("「")[1].split("」")[0]: a for a in alerts.values() if a.step_id is not None}
    payment = next(a for a in alerts.values() if ":payment:" in a.subject)

    assert breach[("R02", "case:LATE")] == end_of(date(2025, 3, 10))
    assert breach[("R03", "case:LATE")] == end_of(date(2025, 3, 17))
    assert steps["受理审查"].rule_id == "R05" and steps["受理审查"].breached_at == end_of(date(2025, 3, 4))
    assert steps["复审退回"].rule_id == "R08" and steps["复审退回"].breached_at == datetime(2025, 3, 6, 18)
    assert steps["现场核查"].rule_id == "R09" and steps["现场核查"].breached_at == datetime(2025, 3, 7, 12)
    assert breach[("R07", "case:SUP")] == datetime(2025, 3, 5, 9)
    assert payment.rule_id == "R06" and payment.breached_at == datetime(2025, 3, 4, 10)
    assert breach[("R06", "case:CF-FREE:completion")] == datetime(2025, 3, 5, 11)
    assert breach[("R08", "case:REFUSED")] == datetime(2025, 3, 5, 10)
    assert breach[("R02", "case:OPEN")] == end_of(date(2025, 3, 10))
    assert breach[("R03", "case:OPEN")] == end_of(date(2025, 3, 17))
    assert breach[("R01", "case:SOON")] == datetime(2025, 4, 14)
    assert breach[("R10", "complaint:TS-1")] == end_of(date(2025, 3, 10))
    # supnet noticed them all at the import or the scan, both at IMPORTED.
    assert {alert.raised_at for alert in alerts.values()} == {IMPORTED}

    # The card counters sit on the breach days: March holds the history, April only the reminder.
    with node.engine.connect() as conn:
        months = {row.key: row.counters for row in grouped_stats(conn, "month")}
        days = {row.key: row.counters for row in grouped_stats(conn, "day")}
    assert {m: (c["reminders"], c["yellow_cards"], c["red_cards"]) for m, c in months.items()} == {
        # R05 R09 | R02 on LATE and the four open cases, R07, R08×2, R10 | R03 on the same five, R06×2
        "2025-03": (2, 9, 7),
        "2025-04": (1, 0, 0),  # R01
    }
    # Day by day, each card on its breach day.
    expected: Counter[tuple[str, str]] = Counter()
    for alert in alerts.values():
        expected[(alert.breached_at.date().isoformat(), alert.severity)] += 1
    counter = {"reminder": "reminders", "yellow": "yellow_cards", "red": "red_cards"}
    actual = Counter(
        {
            (day, severity): values[name]
            for day, values in days.items()
            for severity, name in counter.items()
            if values[name]
        }
    )
    assert actual == expected
    assert_metrics_consistent(node)


def test_escalation_is_dated_by_the_missed_supervision_deadline(node: Node, clock: Clock) -> None:
    load(node, [*items(), acceptance("LATE"), completion("LATE", "20250312T100000")])
    yellow = by_rule(node)[("R02", "case:LATE")]
    assert yellow.correct_by is not None and yellow.correct_by > IMPORTED
    later = datetime(2025, 5, 12, 9)
    assert run_scan(node, later).by_rule == {"R04": 1}
    red = next(a for (rule, _), a in by_rule(node).items() if rule == "R04")
    assert (red.breached_at, red.raised_at) == (yellow.correct_by, later)
    assert_metrics_consistent(node)


def test_escalation_by_hand_is_dated_when_escalated(node: Node, clock: Clock) -> None:
    from node.supervision import escalate_alert

    load(node, [*items(), acceptance("LATE"), completion("LATE", "20250312T100000")])
    yellow = by_rule(node)[("R02", "case:LATE")]
    at = datetime(2025, 4, 16, 9)
    red = escalate_alert(node, yellow.id, now=at)
    assert (red.breached_at, red.raised_at) == (at, at)
    assert_metrics_consistent(node)


def run_cli(node: Node, *args: str) -> Any:
    cli = typer.Typer()
    alerts_cmd.register(cli)
    return CliRunner().invoke(cli, ["alerts", "-d", str(node.data_dir), *args])


def test_alerts_cli_shows_breached_and_raised(node: Node, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    load(node, [*items(), acceptance("LATE"), completion("LATE", "20250318T100000")])
    monkeypatch.setattr(console, "width", 220)
    table = run_cli(node, "--rule", "R03")
    assert table.exit_code == 0, table.output
    assert "违规时间 breached" in table.output and "发现时间 raised" in table.output
    assert "2025-03-17 23:59" in table.output and "2025-04-15 10:00" in table.output
    listed = run_cli(node, "--json")
    assert listed.exit_code == 0, listed.output
    cards = {card["rule_id"]: card for card in json.loads(listed.stdout)["alerts"]}
    assert cards["R03"]["breached_at"] == "2025-03-17T23:59:59+08:00"
    assert cards["R03"]["raised_at"] == "2025-04-15T10:00:00+08:00"
    assert cards["R02"]["correct_by"].endswith("+08:00")
