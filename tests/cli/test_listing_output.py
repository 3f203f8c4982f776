"""Every listing command's ``--format csv|xlsx`` (and ``--out``) on a real node with synthetic data: the rows are the
records ``--json`` prints (CSV on stdout without ``--out``; UTF-8 with BOM in a file, or GB18030 on request; xlsx with
one sheet of them). Bad combinations are one-line errors."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from node.app import open_node
from node.bootstrap import init_node
from node.cli import (
    alerts_cmd,
    audit_cmd,
    complaints_cmd,
    evaluations_cmd,
    items_cmd,
    notifications_cmd,
    scores_cmd,
    stats_cmd,
    subtree_cmd,
)
from node.cli.demo_complaints import work_through_complaints
from node.ingest import Importer
from node.notify import NotificationDispatcher
from node.supervision import default_listeners, run_scan
from node.synthetic import generate

LISTINGS: list[tuple[list[str], str]] = [
    (["alerts"], "alerts"),
    (["complaints"], "complaints"),
    (["evaluations"], "evaluations"),
    (["items", "list"], "items"),
    (["notifications"], "notifications"),
    (["audit"], "entries"),
    (["stats", "--by", "dept"], "groups"),
    (["stats", "--by", "post"], "groups"),
    (["scores", "--month", "2026-04"], "ranking"),
    (["subtree", "--by", "day"], "rows"),
]


def synthetic_node(base: Path, *, cases: int = 500, scan: bool = True) -> Path:
    """A real district node (番禺区) with synthetic March–May 2026 data, complaints worked, scanned in June."""
    init_node(base, "gd.gz.py", level="district", name="番禺区")
    node = open_node(base)
    try:
        generated = generate(
            "gd.gz.py", cases, 5, base / "generated", date_from=date(2026, 3, 2), date_to=date(2026, 5, 29)
        )
        assert Importer(node, listeners=default_listeners(node)).import_files(generated.paths).rejected == 0
        work_through_complaints(node, 7)
        if scan:
            run_scan(node, datetime(2026, 6, 15, 10), full=True)
            NotificationDispatcher(node).run_once()
    finally:
        node.close()
    return base


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synthetic_node(tmp_path_factory.mktemp("listing") / "py"))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()
    modules = (alerts_cmd, audit_cmd, complaints_cmd, evaluations_cmd, items_cmd, notifications_cmd)
    for module in (*modules, scores_cmd, stats_cmd, subtree_cmd):
        module.register(cli)
    return cli


def invoke(app: typer.Typer, command: list[str], data_dir: str, *args: str) -> Any:
    # Subcommand groups take -d after the subcommand (items list -d …), the others after the command.
    return CliRunner().invoke(app, [*command, "-d", data_dir, *args])


def flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
    return out


def as_csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.parametrize(("command", "key"), LISTINGS, ids=[" ".join(c) for c, _ in LISTINGS])
def test_csv_and_xlsx_hold_the_records_json_prints(
    app: typer.Typer, data_dir: str, tmp_path: Path, command: list[str], key: str
) -> None:
    printed = invoke(app, command, data_dir, "--json")
    assert printed.exit_code == 0, printed.output
    records = [flat(record) for record in json.loads(printed.stdout)[key]]
    assert records, f"{command}: nothing listed"
    # The columns: every key, in the order keys first appear (records may differ, e.g. audit details).
    columns = list(dict.fromkeys(name for record in records for name in record))
    records = [{name: record.get(name) for name in columns} for record in records]

    listed = invoke(app, command, data_dir, "--format", "csv")
    assert listed.exit_code == 0, listed.output
    assert not listed.stdout_bytes.startswith(b"\xef\xbb\xbf")  # no byte order mark in a pipe
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert rows == [{name: as_csv_text(value) for name, value in record.items()} for record in records]

    out = tmp_path / "rows.xlsx"
    written = invoke(app, command, data_dir, "--out", str(out))
    assert written.exit_code == 0, written.output
    sheet = openpyxl.load_workbook(out).worksheets[0]
    header, *cells = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert header == columns
    for row, record in zip(cells, records, strict=True):
        # Excel keeps 15 significant digits of a number.
        assert dict(zip(header, row, strict=True)) == {
            name: (None if value in ("", None) else pytest.approx(value) if isinstance(value, float) else value)
            for name, value in record.items()
        }


def test_gb18030_file_round_trips_and_utf8_file_carries_a_bom(app: typer.Typer, data_dir: str, tmp_path: Path) -> None:
    alerts = json.loads(invoke(app, ["alerts"], data_dir, "--json").stdout)["alerts"]
    out = tmp_path / "alerts.csv"
    result = invoke(app, ["alerts"], data_dir, "--format", "csv", "--encoding", "gb18030", "--out", str(out))
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(raw.decode("gb18030"))))
    assert [(row["id"], row["department"], row["message"]) for row in rows] == [
        (str(a["id"]), a["department"], a["message"]) for a in alerts
    ]
    assert any("番禺区" in row["department"] for row in rows)

    utf8 = tmp_path / "alerts-utf8.csv"
    assert invoke(app, ["alerts"], data_dir, "--out", str(utf8)).exit_code == 0
    assert utf8.read_bytes() == b"\xef\xbb\xbf" + raw.decode("gb18030").encode("utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xlsx"], "--out"),
        (["--format", "csv", "--json"], "--json"),
        (["--format", "pdf"], "csv or xlsx"),
        (["--out", "alerts.txt"], "--format"),
    ],
)
def test_bad_format_options_are_one_line_errors(app: typer.Typer, data_dir: str, args: list[str], message: str) -> None:
    result = invoke(app, ["alerts"], data_dir, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
