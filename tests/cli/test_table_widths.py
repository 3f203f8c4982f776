"""Terminal tables at 80 and 160 columns never cut an id, a case number, a node or a department name: the listings on
a real node with synthetic data (departments shown without the node's own place name, ``--wide`` showing everything
whole), the drill-down answer tables (rich Console(width=...)), and ``supnet scan`` (counts per rule; ``--list``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters
from node.cli import alerts_cmd, complaints_cmd, evaluations_cmd, items_cmd, scan_cmd, stats_cmd
from node.cli.render import (
    alerts_table,
    cases_table,
    print_table,
    ranking_table,
    short_department,
    short_departments,
    summary_table,
)
from tests.cli.test_listing_output import synthetic_node

WIDTHS = (80, 160)
PLACE = "广州市番禺区"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synthetic_node(tmp_path_factory.mktemp("widths") / "py"))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()
    for module in (alerts_cmd, complaints_cmd, evaluations_cmd, items_cmd, scan_cmd, stats_cmd):
        module.register(cli)
    return cli


def run(app: typer.Typer, width: int, *args: str) -> str:
    result = CliRunner(env={"COLUMNS": str(width)}).invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def whole(output: str, values: list[str]) -> None:
    """Each value is on one line of the output, uncut; nothing was shortened with an ellipsis."""
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith(("│", "┃")) and "…" in line]
    missing = [value for value in values if not any(value in line for line in lines)]
    assert not missing, f"cut or missing: {missing[:5]}"


def fits(output: str, width: int) -> None:
    assert max(Text(line).cell_len for line in output.splitlines()) <= width


def listed(app: typer.Typer, *args: str) -> Any:
    return json.loads(run(app, 400, *args, "--json"))


def test_short_department_drops_the_place_name_of_the_node() -> None:
    assert short_department("广州市番禺区市场监督管理局", "番禺区") == "市场监督管理局"
    assert short_department("番禺区市场监督管理局", "番禺区") == "市场监督管理局"
    assert short_department("广州市海珠区市场监督管理局", "番禺区") == "广州市海珠区市场监督管理局"
    assert short_department("番禺区", "番禺区") == "番禺区"
    assert short_department("广州市番禺区公安局", "") == "广州市番禺区公安局"
    # Two departments that would look alike keep their full names.
    both = short_departments(["广州市番禺区公安局", "番禺区公安局", "广州市番禺区教育局"], "番禺区")
    assert both == {
        "广州市番禺区公安局": "广州市番禺区公安局",
        "番禺区公安局": "番禺区公安局",
        "广州市番禺区教育局": "教育局",
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_listings_keep_ids_case_numbers_and_departments_whole(app: typer.Typer, data_dir: str, width: int) -> None:
    alerts = listed(app, "alerts", "-d", data_dir, "--limit", "40")["alerts"]
    output = run(app, width, "alerts", "-d", data_dir, "--limit", "40")
    whole(output, [str(a["id"]) for a in alerts] + [a["subject"] for a in alerts])
    whole(output, [a["department"].removeprefix(PLACE) for a in alerts])
    assert all(a["department"].startswith(PLACE) for a in alerts) and PLACE not in output
    fits(output, width)

    groups = listed(app, "stats", "-d", data_dir, "--by", "dept")["groups"]
    output = run(app, width, "stats", "-d", data_dir, "--by", "dept")
    whole(output, [g["key"].removeprefix(PLACE) for g in groups] + [f"{g['received']:,}" for g in groups])
    fits(output, width)

    complaints = listed(app, "complaints", "-d", data_dir)["complaints"]
    output = run(app, width, "complaints", "-d", data_dir)
    whole(output, [c["complaint_no"] for c in complaints])
    evaluations = listed(app, "evaluations", "-d", data_dir, "--limit", "30")["evaluations"]
    output = run(app, width, "evaluations", "-d", data_dir, "--limit", "30")
    whole(output, [e["case_no"] for e in evaluations] + [e["department"].removeprefix(PLACE) for e in evaluations])
    items = listed(app, "items", "list", "-d", data_dir)["items"]
    output = run(app, width, "items", "list", "-d", data_dir)
    whole(output, [i["implementation_code"] for i in items] + [i["department"].removeprefix(PLACE) for i in items])


def test_narrow_tables_move_low_value_columns_out_and_wide_shows_everything(app: typer.Typer, data_dir: str) -> None:
    narrow = run(app, 80, "alerts", "-d", data_dir, "--limit", "5")
    assert "未显示 hidden:" in narrow and "post" in narrow and "correct by" not in narrow.split("未显示")[0]
    wider = run(app, 160, "alerts", "-d", data_dir, "--limit", "5")
    assert "correct by" in wider and "未显示" not in wider
    wide = run(app, 80, "alerts", "-d", data_dir, "--limit", "5", "--wide")
    alerts = listed(app, "alerts", "-d", data_dir, "--limit", "5")["alerts"]
    whole(wide, [a["department"] for a in alerts])  # full names, every column
    assert "correct by" in wide and "未显示" not in wide
    assert max(Text(line).cell_len for line in wide.splitlines()) > 80


@pytest.mark.parametrize("width", WIDTHS)
def test_answer_tables_keep_case_numbers_nodes_and_departments_whole(width: int) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    department = "广州市番禺区城市管理和综合执法局"
    case_no = "GD.GZ.PY.SQ-20260428-0000006"
    cases = [
        dd.CaseRow(
            case_no=f"{case_no}{n}",
            item_name="建设工程消防设计审查验收（特殊建设工程消防验收）",
            department=department,
            applicant_masked="张*",
            status="open",
            accepted_at_ms=1_777_000_000_000,
            promised_due_at_ms=1_778_000_000_000,
            overdue_promised=True,
            red_cards=1,
        )
        for n in range(3)
    ]
    alerts = [
        dd.AlertRow(
            id=100_000 + n,
            rule_id="R03",
            severity="red",
            status="raised",
            case_no=f"{case_no}{n}",
            department=department,
            message="办件已超过法定办结时限 legal limit passed",
            breached_at_ms=1_778_000_000_000,
        )
        for n in range(3)
    ]
    counters = Counters(received=123_456, completed=120_000, red_cards=17)
    summary = dd.SummaryAnswer(group_by=dd.SUMMARY_GROUP_BY_CHILD, total=counters)
    for child in ("gd.gz.py.shiqiao", "gd.gz.py.dashi"):
        summary.rows.add(key=child, label="广州市番禺区市桥街道办事处", counters=counters)
    ranking = dd.RankingAnswer(metric=dd.RANKING_METRIC_SCORE)
    ranking.rows.add(rank=1, node_id="gd.gz.py.shiqiao", label="市桥街道", value=97.5, numerator=1234, denominator=3)
    for table, values in (
        (cases_table(cases, "cases", tz, width=width), [c.case_no for c in cases] + [department]),
        (alerts_table(alerts, "alerts", tz, width=width), [str(a.id) for a in alerts] + [department]),
        (summary_table(summary, "summary", width=width), ["gd.gz.py.shiqiao", "广州市番禺区市桥街道办事处", "123,456"]),
        (ranking_table(ranking, "ranking", width=width), ["gd.gz.py.shiqiao", "市桥街道", "97.50"]),
    ):
        console = Console(width=width, record=True)
        print_table(table, console)
        output = console.export_text()
        whole(output, values)
        fits(output, width)


def test_scan_prints_counts_per_rule_and_lists_with_list(app: typer.Typer, tmp_path: Path) -> None:
    data_dir = str(synthetic_node(tmp_path / "py", cases=150, scan=False))
    counted = run(app, 120, "scan", "-d", data_dir, "--now", "2026-06-15T10:00:00")
    assert "raised per rule" in counted and "R03" in counted and "alerts raised (first" not in counted
    alerts = listed(app, "alerts", "-d", data_dir)["alerts"]
    assert not any(f"case:{a['case_no']}" in counted for a in alerts if a["case_no"])
    again = run(app, 120, "scan", "-d", data_dir, "--now", "2026-07-15T10:00:00", "--full", "--list")
    raised = json.loads(run(app, 400, "alerts", "-d", data_dir, "--json"))["alerts"]
    new = [a for a in raised if a["raised_at"].startswith("2026-07-15")]
    assert new and "alerts raised (first" in again
    whole(again, [str(a["id"]) for a in new])
