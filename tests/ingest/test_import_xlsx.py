"""Import of .xlsx workbooks and of CSV files with other delimiters, on SQLite and PostgreSQL.

A workbook holding the same records as CSV files (numbers and date-times as typed Excel cells, not text) imports
to the same rows with the same rejections; errors name the sheet, the row as Excel shows it and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from node.app import Node, open_node
from node.bootstrap import init_node
from node.cli import import_cmd, init_cmd
from node.config import load_config, parse_config, save_config
from node.errors import ConfigError, ExitCode, ValidationError
from node.ingest import Importer, ImportSummary, open_files
from tests.harness.postgres import fresh_schema_url
from tests.ingest.test_import import NOW, snapshot

ITEM_HEADER = ["实施编码", "基本编码", "事项名称", "事项类型代码", "行使层级代码", "实施主体", "实施主体代码",
               "法定办结时限", "承诺办结时限", "是否收费", "收费标准"]  # fmt: skip
ACCEPTANCE_HEADER = ["办件编号", "实施编码", "受理单位", "受理时间", "办件类型代码", "申请人名称"]
COMPLETION_HEADER = ["case_no", "completed_at", "handler_name"]

# Each record twice: as Excel holds it (typed cells) and as its CSV export reads.
ITEMS: list[tuple[list[Any], list[str]]] = [
    (
        ["I1", "B0001", "餐饮服务许可", "01", 4, "番禺区市场监督管理局", "11440113MB2C12345X", 20, 10, 1, 50.5],
        [
            "I1",
            "B0001",
            "餐饮服务许可",
            "01",
            "4",
            "番禺区市场监督管理局",
            "11440113MB2C12345X",
            "20",
            "10",
            "1",
            "50.5",
        ],
    ),
    (
        ["I2", "B0002", "户外广告设置", "01", 4, "番禺区城市管理局", "11440113MB2C12346X", 5, 3, 0, None],
        ["I2", "B0002", "户外广告设置", "01", "4", "番禺区城市管理局", "11440113MB2C12346X", "5", "3", "0", ""],
    ),
    (  # rejected: a negative fee
        ["I3", "B0003", "临时占道", "01", 4, "番禺区城市管理局", "11440113MB2C12346X", 5, 3, 1, -2.0],
        ["I3", "B0003", "临时占道", "01", "4", "番禺区城市管理局", "11440113MB2C12346X", "5", "3", "1", "-2"],
    ),
]
ACCEPTANCES: list[tuple[list[Any], list[str]]] = [
    (
        ["C1", "I1", "番禺区市场监督管理局", datetime(2026, 1, 5, 9, 30), 2, "张三"],
        ["C1", "I1", "番禺区市场监督管理局", "2026-01-05 09:30:00", "2", "张三"],
    ),
    (  # a case number Excel holds as a number; a time stored as a fraction of a day just under the minute
        [20260002, "I2", "番禺区城市管理局", datetime(2026, 1, 6, 9, 59, 59, 999_600), 1, "李四"],
        ["20260002", "I2", "番禺区城市管理局", "2026-01-06 10:00:00", "1", "李四"],
    ),
    (  # rejected: no such month
        ["C3", "I1", "番禺区市场监督管理局", "2026-13-02 09:00", 2, "王五"],
        ["C3", "I1", "番禺区市场监督管理局", "2026-13-02 09:00", "2", "王五"],
    ),
    (  # rejected: the item code is missing (an empty cell)
        ["C4", None, "番禺区市场监督管理局", datetime(2026, 2, 2, 9, 0), 2, "赵六"],
        ["C4", "", "番禺区市场监督管理局", "2026-02-02 09:00:00", "2", "赵六"],
    ),
    (  # rejected: unknown item
        ["C5", "I9", "番禺区市场监督管理局", datetime(2026, 2, 3, 9, 0), 2, "钱七"],
        ["C5", "I9", "番禺区市场监督管理局", "2026-02-03 09:00:00", "2", "钱七"],
    ),
]
COMPLETIONS: list[tuple[list[Any], list[str]]] = [
    (["C1", datetime(2026, 1, 15, 16, 0), "赵六"], ["C1", "2026-01-15 16:00:00", "赵六"]),
    (["20260002", "20260106T110000", None], ["20260002", "20260106T110000", ""]),
    (["C404", datetime(2026, 1, 15, 16, 0), "孙八"], ["C404", "2026-01-15 16:00:00", "孙八"]),  # unknown case
]
SHEETS = {
    "事项": (ITEM_HEADER, ITEMS),
    "事项受理": (ACCEPTANCE_HEADER, ACCEPTANCES),
    "事项办结": (COMPLETION_HEADER, COMPLETIONS),
}


def write_workbook(path: Path, *, blank_rows_first: int = 0, extra_sheets: dict[str, str] | None = None) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    # Sheets in an order KIND_ORDER must fix: completions first.
    for title in reversed(SHEETS):
        header, records = SHEETS[title]
        sheet = workbook.create_sheet(title)
        for _ in range(blank_rows_first):
            sheet.append([])
        sheet.append(header)
        for cells, _ in records:
            sheet.append(cells)
    for title, state in (extra_sheets or {}).items():
        sheet = workbook.create_sheet(title)
        sheet.append(["代码", "名称"])
        sheet.append(["01", "行政许可"])
        sheet.sheet_state = state
    workbook.save(path)
    return path


def write_csvs(directory: Path, delimiter: str = ",") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for title, (header, records) in SHEETS.items():
        lines = [delimiter.join(header), *(delimiter.join(text) for _, text in records)]
        path = directory / f"{title}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture
def two_nodes(db_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Two empty nodes on the backend under test (two SQLite files, or two PostgreSQL schemas)."""

    def make(name: str, url: str) -> Node:
        init_node(tmp_path / name, "gd.gz.py", db_url=url)
        return open_node(tmp_path / name, clock=lambda: NOW)

    if db_url.startswith("sqlite"):
        nodes = make("a", f"sqlite:///{os.fspath(tmp_path)}/a.db"), make("b", f"sqlite:///{os.fspath(tmp_path)}/b.db")
        yield nodes
        for opened in nodes:
            opened.close()
        return
    with fresh_schema_url() as other:
        nodes = make("a", db_url), make("b", other)
        yield nodes
        for opened in nodes:
            opened.close()


def rejections(summary: ImportSummary) -> list[tuple[str, int, str | None, str]]:
    """(kind, row/line, field, reason) of each rejected record, in order."""
    return [(error.kind, error.line, error.field, error.reason) for error in summary.errors]


def test_workbook_imports_like_its_csv_export(two_nodes: tuple[Node, Node], tmp_path: Path) -> None:
    by_csv, by_xlsx = two_nodes
    csv_summary = Importer(by_csv).import_files(write_csvs(tmp_path / "csv"))
    xlsx_summary = Importer(by_xlsx).import_files([write_workbook(tmp_path / "办件.xlsx")])

    assert (xlsx_summary.accepted, xlsx_summary.rejected) == (csv_summary.accepted, csv_summary.rejected) == (6, 5)
    assert rejections(xlsx_summary) == rejections(csv_summary)
    assert [error.message for error in xlsx_summary.errors] == [error.message for error in csv_summary.errors]
    assert snapshot(by_xlsx) == snapshot(by_csv)
    # The sheet, the row as Excel numbers it, the field and why.
    where = {(error.file, error.line, error.field, error.reason) for error in xlsx_summary.errors}
    workbook = str(tmp_path / "办件.xlsx")
    assert (f"{workbook}[事项受理]", 4, "accepted_at", "bad_datetime") in where
    assert (f"{workbook}[事项受理]", 5, "implementation_code", "missing_field") in where
    assert (f"{workbook}[事项]", 4, "fee_standard", "negative_fee") in where
    shown = [str(error) for error in xlsx_summary.errors]
    assert any(text.startswith(f"{workbook}[事项受理]:4: acceptance C3:") and "受理时间" in text for text in shown)
    # Each sheet is a source of the import, listed (and audited) with the workbook's hash.
    assert [(entry["format"], entry.get("sheet"), entry["kind"]) for entry in xlsx_summary.files] == [
        ("xlsx", "事项", "item"),
        ("xlsx", "事项受理", "acceptance"),
        ("xlsx", "事项办结", "completion"),
    ]
    assert len({entry["sha256"] for entry in xlsx_summary.files}) == 1


def test_header_below_blank_rows_and_hidden_sheets(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "book.xlsx", blank_rows_first=2, extra_sheets={"代码表": "hidden"})
    readers = open_files([path])
    assert [reader.sheet for reader in readers] == ["事项", "事项受理", "事项办结"]
    assert sum(reader.size for reader in readers) == path.stat().st_size
    kind, row, fields = next(iter(readers[1]))
    assert (kind, row) == ("acceptance", 4)  # two blank rows, the header on row 3
    assert isinstance(fields, dict) and fields["accepted_at"] == "20260105T093000"
    assert any("代码表" in warning for reader in readers for warning in reader.warnings)
    # One load for all sheets, and the file is closed once every sheet has been read through.
    assert path_open(path)
    for reader in readers:
        list(reader)
    assert not path_open(path)


def path_open(path: Path) -> bool:
    """Whether this process holds ``path`` open (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    return any(fd.resolve() == path.resolve() for fd in fds.iterdir() if fd.is_symlink() and fd.exists())


def test_a_visible_sheet_of_unknown_kind_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "book.xlsx", extra_sheets={"代码表": "visible"})
    with pytest.raises(ValidationError) as caught:
        open_files([path])
    assert "book.xlsx[代码表]" in caught.value.message and "sheet name" in caught.value.message


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "不是可读取的 .xlsx"),
        ("old.xls", b"\xd0\xcf\x11\xe0", "另存为 .xlsx"),
    ],
)
def test_unreadable_workbooks_are_refused_before_import(tmp_path: Path, name: str, content: bytes, named: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationError) as caught:
        open_files([path])
    assert named in caught.value.message and name in caught.value.message


def test_empty_workbook_is_refused(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.save(tmp_path / "empty.xlsx")
    with pytest.raises(ValidationError, match="no visible sheet holds data"):
        open_files([tmp_path / "empty.xlsx"])


# -- CSV delimiters ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", ["\t", ";", "|"])
def test_delimiter_option_imports_like_commas(two_nodes: tuple[Node, Node], tmp_path: Path, delimiter: str) -> None:
    by_comma, by_other = two_nodes
    commas = Importer(by_comma).import_files(write_csvs(tmp_path / "comma"))
    other = Importer(by_other).import_files(write_csvs(tmp_path / "other", delimiter), delimiter=delimiter)
    assert rejections(other) == rejections(commas)
    assert snapshot(by_other) == snapshot(by_comma)


@pytest.mark.parametrize(("delimiter", "named"), [("\t", "制表符"), (";", "分号"), ("|", "竖线")])
def test_header_in_another_delimiter_is_refused_with_a_hint(tmp_path: Path, delimiter: str, named: str) -> None:
    [_, acceptances, _] = write_csvs(tmp_path, delimiter)
    with pytest.raises(ValidationError) as caught:
        open_files([acceptances])
    message = caught.value.message
    assert f"表头看起来以{named}分隔" in message and "--delimiter" in message and "办件编号" in message
    # Told to use commas, a comma file gets the hint the other way round.
    [_, comma_file, _] = write_csvs(tmp_path / "commas")
    with pytest.raises(ValidationError, match="表头看起来以逗号分隔"):
        open_files([comma_file], delimiter=delimiter)


def test_cli_delimiter_option_config_default_and_hint(tmp_path: Path) -> None:
    runner = CliRunner()
    app = typer.Typer()
    for module in (init_cmd, import_cmd):  # two commands: a group, as `supnet` is
        module.register(app)
    data_dir = tmp_path / "node"
    init_node(data_dir, "gd.gz.py")
    files = [str(path) for path in write_csvs(tmp_path / "semi", ";")]

    refused = runner.invoke(app, ["import", "--data-dir", str(data_dir), *files])
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "表头看起来以分号分隔" in refused.output and "--delimiter ';'" in refused.output
    assert "Traceback" not in refused.output

    bad = runner.invoke(app, ["import", "--data-dir", str(data_dir), "--delimiter", "ab", *files])
    assert bad.exit_code == ExitCode.USAGE and "--delimiter" in bad.output

    done = runner.invoke(app, ["import", "--data-dir", str(data_dir), "--delimiter", ";", "--json", *files])
    assert done.exit_code == ExitCode.RECORDS_REJECTED, done.output  # the data set's bad records
    assert json.loads(done.stdout)["accepted"] == 6

    # ingest.csv_delimiter in the config is the default when --delimiter is not given.
    config = load_config(data_dir)
    save_config(
        data_dir, config.model_copy(update={"ingest": config.ingest.model_copy(update={"csv_delimiter": "\t"})})
    )
    tabbed = [str(path) for path in write_csvs(tmp_path / "tab", "\t")]
    again = runner.invoke(app, ["import", "--data-dir", str(data_dir), "--json", *tabbed])
    assert json.loads(again.stdout)["duplicates"] == 6, again.output


def test_config_delimiter_names_and_errors() -> None:
    assert parse_config({"id": "gd.gz.py", "ingest": {"csv_delimiter": "tab"}}).ingest.csv_delimiter == "\t"
    assert parse_config({"id": "gd.gz.py", "ingest": {"csv_delimiter": ";"}}).ingest.csv_delimiter == ";"
    with pytest.raises(ConfigError, match=r"ingest\.csv_delimiter"):
        parse_config({"id": "gd.gz.py", "ingest": {"csv_delimiter": ";;"}})
