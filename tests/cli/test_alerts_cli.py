"""The supervision CLI on a real node: ``supnet alerts`` (list, filters, ack, correct, escalate), ``supnet scan``,
``supnet metrics check`` (exit 7 on any difference) and ``supnet stats --by`` — tables and --json."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from node.app import open_node
from node.cli import alerts_cmd, metrics_cmd, scan_cmd, stats_cmd
from node.cli.common import console
from node.errors import ExitCode
from node.store import MetricBucket
from tests.harness.clocks import Clock
from tests.harness.rules import (
    OTHER_UNIT,
    UNIT,
    acceptance,
    completion,
    items,
    load,
    make_node,
)


@pytest.fixture
def data_dir(tmp_path: Path, sqlite_url: str) -> str:
    # Imported once CLI-3 is completed (an import refuses a completion dated ahead of the node clock).
    node = make_node(tmp_path, sqlite_url, Clock(datetime(2025, 3, 5, 12)))
    load(
        node,
        [
            *items(),
            acceptance("CLI-1"),
            acceptance("CLI-2", department=OTHER_UNIT),
            acceptance("CLI-3"),
            completion("CLI-3", "20250305T100000", result_code="2"),  # refusal without reason: R08 yellow
        ],
    )
    node.close()
    return str(tmp_path)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 200)  # a wide terminal, so table cells are not wrapped
    cli = typer.Typer()
    for module in (alerts_cmd, metrics_cmd, scan_cmd, stats_cmd):
        module.register(cli)
    return cli


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def run_json(app: typer.Typer, *args: str) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_scan_then_list_filter_ack_correct(app: typer.Typer, data_dir: str) -> None:
    scanned = run_json(app, "scan", "-d", data_dir, "--now", "20250311T090000")
    assert scanned["by_rule"] == {"R02": 2, "R04": 1}  # CLI-3's R08 yellow was due for correction by 03-06
    assert scanned["full"] is True
    assert {a["subject"] for a in scanned["alerts"] if a["rule_id"] == "R02"} == {"case:CLI-1", "case:CLI-2"}
    again = run_json(app, "scan", "-d", data_dir, "--now", "2025-03-11T09:05:00")
    assert (again["raised_total"], again["full"]) == (0, False)

    everything = run_json(app, "alerts", "-d", data_dir)["alerts"]
    assert len(everything) == 4
    yellow = run_json(app, "alerts", "-d", data_dir, "--open", "--severity", "yellow")["alerts"]
    assert [a["case_no"] for a in yellow] == ["CLI-2", "CLI-1"]  # newest first; the escalated R08 is closed
    other = run_json(app, "alerts", "-d", data_dir, "--department", OTHER_UNIT)["alerts"]
    assert [(a["rule_id"], a["department"]) for a in other] == [("R02", OTHER_UNIT)]
    assert [a["rule_id"] for a in run_json(app, "alerts", "-d", data_dir, "--rule", "R04")["alerts"]] == ["R04"]

    target = str(yellow[0]["id"])
    acked = run_json(app, "alerts", "ack", target, "-d", data_dir, "--by", "张三")
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "张三")
    twice = run(app, "alerts", "ack", target, "-d", data_dir)
    assert twice.exit_code == ExitCode.CONFLICT
    assert "INVALID_STATE" in twice.output and "acknowledged" in twice.output

    no_note = run(app, "alerts", "correct", target, "-d", data_dir)
    assert no_note.exit_code == 2 and "'note'" in no_note.output
    corrected = run_json(app, "alerts", "correct", target, "-d", data_dir, "--note", "已补办，向申请人说明")
    assert (corrected["status"], corrected["correction_note"]) == ("corrected", "已补办，向申请人说明")
    assert run(app, "alerts", "correct", target, "-d", data_dir, "--note", "x").exit_code == ExitCode.CONFLICT

    unknown = run(app, "alerts", "ack", "99999", "-d", data_dir)
    assert unknown.exit_code == ExitCode.NOT_FOUND and "NOT_FOUND" in unknown.output
    bad = run(app, "alerts", "-d", data_dir, "--severity", "purple")
    assert bad.exit_code == 2 and "severity" in bad.output

    table = run(app, "alerts", "-d", data_dir, "--open")
    assert table.exit_code == 0
    assert "case:CLI-1" in table.output and "R02" in table.output


def test_escalate_by_hand(app: typer.Typer, data_dir: str) -> None:
    run_json(app, "scan", "-d", data_dir, "--now", "20250311T090000")
    yellow = run_json(app, "alerts", "-d", data_dir, "--rule", "R02", "--department", UNIT)["alerts"][0]
    red = run_json(app, "alerts", "escalate", str(yellow["id"]), "-d", data_dir)
    assert (red["rule_id"], red["severity"], red["case_no"]) == ("R04", "red", "CLI-1")
    assert red["subject"] == f"case:CLI-1:alert:{yellow['id']}"
    again = run(app, "alerts", "escalate", str(yellow["id"]), "-d", data_dir)
    assert again.exit_code == ExitCode.CONFLICT and "only an open yellow card" in again.output
    not_yellow = run(app, "alerts", "escalate", str(red["id"]), "-d", data_dir)
    assert not_yellow.exit_code == ExitCode.CONFLICT


def test_scan_table_and_bad_time(app: typer.Typer, data_dir: str) -> None:
    table = run(app, "scan", "-d", data_dir, "--now", "20250318T090000")
    assert table.exit_code == 0, table.output
    assert "R03" in table.output and "alerts raised" in table.output
    bad = run(app, "scan", "-d", data_dir, "--now", "2025-13-01")
    assert bad.exit_code == 2 and "--now" in bad.output


def test_metrics_check_exit_codes(app: typer.Typer, data_dir: str) -> None:
    run_json(app, "scan", "-d", data_dir, "--now", "20250318T090000")
    ok = run(app, "metrics", "check", "-d", data_dir)
    assert ok.exit_code == 0 and "consistent" in ok.output
    node = open_node(Path(data_dir))
    with node.engine.begin() as conn:
        conn.execute(update(MetricBucket).where(MetricBucket.day == date(2025, 3, 3)).values(received=99))
    node.close()
    broken = run(app, "metrics", "check", "-d", data_dir)
    assert broken.exit_code == ExitCode.VERIFICATION_FAILED
    assert "received maintained 99" in broken.output
    as_json = run(app, "metrics", "check", "-d", data_dir, "--json")
    assert as_json.exit_code == ExitCode.VERIFICATION_FAILED
    report = json.loads(as_json.stdout)
    assert report["consistent"] is False and len(report["differences"]) == 2  # two departments on 03-03


def test_stats_grouped_with_rates(app: typer.Typer, data_dir: str) -> None:
    by_dept = run_json(app, "stats", "-d", data_dir, "--by", "dept", "--from", "2025-03-01", "--to", "2025-03-31")
    groups = {g["key"]: g for g in by_dept["groups"]}
    assert groups[UNIT]["received"] == 2 and groups[OTHER_UNIT]["received"] == 1
    assert groups[UNIT]["completed"] == 1 and groups[UNIT]["early_rate"] == 1.0
    assert groups[OTHER_UNIT]["early_rate"] is None
    by_day = run_json(app, "stats", "-d", data_dir, "--by", "day", "--from", "20250305", "--to", "20250305")
    assert [g["key"] for g in by_day["groups"]] == ["2025-03-05"]
    assert by_day["groups"][0]["refused"] == 1
    table = run(app, "stats", "-d", data_dir, "--by", "month")
    assert table.exit_code == 0 and "2025-03" in table.output
    wrong = run(app, "stats", "-d", data_dir, "--by", "week")
    assert wrong.exit_code == 2 and "--by" in wrong.output
    reversed_range = run(app, "stats", "-d", data_dir, "--by", "day", "--from", "2025-03-05", "--to", "2025-03-01")
    assert reversed_range.exit_code == 2
