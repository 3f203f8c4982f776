"""``supnet report`` on a real district node: the xlsx holds one sheet per section with the figures of ``--json``
(and of the independent ``supnet stats`` / ``supnet scores``) and native Excel charts; the CSV round-trips through
GB18030; the HTML page is print-ready (A4, page breaks, system fonts, inline SVG charts, nothing fetched)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from node.cli import report_cmd, scores_cmd, stats_cmd

SHEETS = ["概况", "各单位指标", "排名", "效能考评", "红黄牌与超期", "红牌明细", "超期件明细", "投诉办理", "督办与问责"]
CHARTED = {"各单位指标": 2, "排名": 1, "效能考评": 1, "红黄牌与超期": 1, "投诉办理": 1}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()
    for module in (report_cmd, scores_cmd, stats_cmd):
        module.register(cli)
    return cli


def run(app: typer.Typer, *args: Any) -> Any:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result


def run_json(app: typer.Typer, *args: Any) -> Any:
    return json.loads(run(app, *args, "--json").stdout)


@pytest.fixture(scope="module")
def april(app: typer.Typer, district: Path) -> dict[str, Any]:
    return run_json(app, "report", "-d", district, "--period", "2026-04")  # type: ignore[no-any-return]


def sheet_tables(sheet: Any) -> dict[str, list[dict[str, Any]]]:
    """Each titled table of a section sheet: its rows as {header: value}, the total row included."""
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    tables: dict[str, list[dict[str, Any]]] = {}
    index = 0
    while index < len(rows) - 1:
        title, header = rows[index], rows[index + 1]
        named = [h for h in header if h]
        if title[0] and not any(title[1:]) and len(named) > 1 and all(isinstance(h, str) for h in named):
            headers = [h for h in header if h]
            body = []
            index += 2
            while index < len(rows) and any(cell is not None for cell in rows[index][: len(headers)]):
                if len(headers) > 1 and not any(rows[index][1 : len(headers)]):
                    break  # a note below the table
                body.append(dict(zip(headers, rows[index], strict=False)))
                index += 1
            tables[str(title[0])] = body
        else:
            index += 1
    return tables


def test_xlsx_sections_hold_the_figures_of_json(app: typer.Typer, district: Path, april: dict[str, Any]) -> None:
    out = district.parent / "april.xlsx"
    run(app, "report", "-d", district, "--period", "2026-04", "--out", out)
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == SHEETS

    units = sheet_tables(book["各单位指标"])["各单位受理办结情况"]
    [own] = april["units"]
    assert units[0]["单位"] == "gd.gz.py 番禺区" and units[0]["范围"] == "本级"
    assert units[0]["受理件数"] == own["counters"]["received"] > 0
    assert units[0]["红牌"] == own["counters"]["red_cards"]
    assert units[0]["提前办结率"] == pytest.approx(own["rates"]["early_rate"])
    assert units[-1]["单位"] == "合计" and units[-1]["办结件数"] == april["total"]["counters"]["completed"]

    overview = {row["指标"]: row["数值"] for row in sheet_tables(book["概况"])["主要指标"]}
    assert overview["受理件数"] == april["total"]["counters"]["received"]
    assert overview["上报数据"] == april["total"]["counters"]["records_reported"]

    score_rows = sheet_tables(book["排名"])["按效能考评得分排名"]
    [score_ranking] = [r for r in april["rankings"] if r["metric"] == "score"]
    assert [(row["名次"], row["得分"]) for row in score_rows] == [
        (entry["rank"], entry["value"]) for entry in score_ranking["entries"]
    ]


def test_xlsx_scores_and_departments_equal_the_scores_and_stats_commands(
    app: typer.Typer, district: Path, april: dict[str, Any]
) -> None:
    out = district.parent / "april-2.xlsx"
    run(app, "report", "-d", district, "--period", "2026-04", "--out", out)
    book = openpyxl.load_workbook(out)
    scores = run_json(app, "scores", "-d", district, "--month", "2026-04")["ranking"]
    sheet = sheet_tables(book["效能考评"])["本级各部门效能考评"]
    assert len(sheet) == len(scores) > 3
    assert {row["部门"]: row["得分"] for row in sheet} == {s["unit"]: round(s["score"], 2) for s in scores}
    assert {row["部门"]: row["名次"] for row in sheet} == {s["unit"]: s["rank"] for s in scores}

    stats = run_json(app, "stats", "-d", district, "--by", "dept", "--from", "2026-04-01", "--to", "2026-04-30")
    by_department = {group["key"]: group for group in stats["groups"]}
    cards = sheet_tables(book["红黄牌与超期"])["红黄牌与超期件（按部门，本级数据）"]
    total = cards.pop()
    assert total["部门"] == "合计" and total["红牌"] == sum(g["red_cards"] for g in stats["groups"]) > 0
    for row in cards:
        group = by_department[row["部门"]]
        assert (row["红牌"], row["黄牌"], row["超期未办结（承诺时限）"]) == (
            group["red_cards"],
            group["yellow_cards"],
            group["open_overdue_promised"],
        )
    red_cards = sheet_tables(book["红牌明细"])["本期红牌（本级数据）"]
    assert [row["监察编号"] for row in red_cards] == [card["alert_id"] for card in april["red_cards"]]
    assert april["red_cards_total"] == total["红牌"]


def test_xlsx_carries_native_charts_of_its_tables(app: typer.Typer, district: Path) -> None:
    out = district.parent / "charts.xlsx"
    run(app, "report", "-d", district, "--period", "2026-Q2", "--out", out)
    with zipfile.ZipFile(out) as archive:
        charts = [name for name in archive.namelist() if re.fullmatch(r"xl/charts/chart\d+\.xml", name)]
        formulas = [re.findall(r"<c:f>([^<]+)</c:f>", archive.read(name).decode("utf-8")) for name in charts]
        drawings = [name for name in archive.namelist() if re.fullmatch(r"xl/drawings/drawing\d+\.xml", name)]
    assert len(charts) == sum(CHARTED.values())
    assert len(drawings) == len(CHARTED)
    referenced: dict[str, int] = {}
    for chart in formulas:
        [sheet] = {formula.split("!")[0].strip("'") for formula in chart}  # a chart draws its own table
        referenced[sheet] = referenced.get(sheet, 0) + 1
    assert referenced == CHARTED


def test_csv_in_gb18030_round_trips_and_utf8_carries_a_bom(
    app: typer.Typer, district: Path, april: dict[str, Any]
) -> None:
    out = district.parent / "april-gbk.csv"
    run(app, "report", "-d", district, "--period", "2026-04", "--format", "csv", "--encoding", "gb18030", "--out", out)
    raw = out.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gb18030")
    assert text.encode("gb18030") == raw
    rows = list(csv.reader(io.StringIO(text)))
    assert ["【各单位指标】"] in rows and ["【督办与问责】"] in rows
    figures = {row[0]: row[1] for row in rows if len(row) == 2}
    assert figures["受理件数"] == str(april["total"]["counters"]["received"])
    assert figures["提前办结率"] == f"{april['total']['rates']['early_rate'] * 100:.2f}%"

    utf8 = district.parent / "april.csv"
    run(app, "report", "-d", district, "--period", "2026-04", "--out", utf8)
    assert utf8.read_bytes().startswith(b"\xef\xbb\xbf")
    assert utf8.read_bytes()[3:].decode("utf-8") == text


def test_html_is_print_ready_without_anything_fetched(app: typer.Typer, district: Path) -> None:
    out = district.parent / "april.html"
    run(app, "report", "-d", district, "--period", "2026-04", "--out", out)
    page = out.read_text(encoding="utf-8")
    assert "@page { size: A4" in page
    assert "break-before: page" in page and "page-break-before: always" in page
    for title in SHEETS:
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == sum(CHARTED.values())
    assert '"Noto Sans CJK SC"' in page and "@font-face" not in page
    assert "<script" not in page and "url(" not in page and " src=" not in page and " href=" not in page
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert "电子监察通报" in page and "2026年4月" in page


def test_periods_month_quarter_half_year_and_ranges(app: typer.Typer, district: Path) -> None:
    named = {
        "2026-05": ("2026-05-01", "2026-05-31", "2026年5月"),
        "2026-Q2": ("2026-04-01", "2026-06-30", "2026年第二季度"),
        "2026-H1": ("2026-01-01", "2026-06-30", "2026年上半年"),
        "2026": ("2026-01-01", "2026-12-31", "2026年度"),
    }
    for text, (first, last, title) in named.items():
        period = run_json(app, "report", "-d", district, "--period", text)["period"]
        assert (period["from"], period["to"], period["title"]) == (first, last, title)
    ranged = run_json(app, "report", "-d", district, "--from", "2026-04-10", "--to", "2026-04-20")
    days = run_json(app, "stats", "-d", district, "--by", "day", "--from", "2026-04-10", "--to", "2026-04-20")
    assert ranged["period"]["title"] == "2026-04-10 至 2026-04-20"
    assert ranged["total"]["counters"]["received"] == sum(group["received"] for group in days["groups"]) > 0

    for bad in (["--period", "2026-13"], ["--period", "2026-11", "--from", "2026-11-01"], ["--from", "2026-04-10"]):
        result = CliRunner().invoke(app, ["report", "-d", str(district), *bad, "--json"])
        assert result.exit_code == 2 and "error" in result.output and "Traceback" not in result.output
    refused = CliRunner().invoke(app, ["report", "-d", str(district), "--period", "2026-04", "--format", "xlsx"])
    assert refused.exit_code == 2 and "--out" in refused.output
