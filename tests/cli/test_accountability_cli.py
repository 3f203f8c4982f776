"""``supnet accountability add|list`` on a real node: a measure from a complaint, the register as a table and as
JSON, errors naming the bad field, and ``supnet complaints conclude --measure`` working as before."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from node.app import open_node
from node.cli import accountability_cmd, complaints_cmd
from node.cli.common import console
from node.supervision import activity_totals
from tests.harness.clocks import Clock
from tests.harness.rules import UNIT, load, make_node

PERSON = "李某某"


@pytest.fixture
def data_dir(tmp_path: Path, sqlite_url: str) -> str:
    node = make_node(tmp_path, sqlite_url, Clock(datetime(2025, 3, 20, 10)))
    complaint = {
        "complaint_no": "TS-9",
        "title": "多次往返",
        "respondent_unit": UNIT,
        "respondent_person": PERSON,
        "received_at": "20250303T090000",
    }
    load(node, [("complaint", 0, complaint)])
    node.close()
    return str(tmp_path)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 220)
    cli = typer.Typer()
    accountability_cmd.register(cli)
    complaints_cmd.register(cli)
    return cli


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def run_json(app: typer.Typer, *args: str) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_conclude_then_record_the_measure_from_the_complaint(app: typer.Typer, data_dir: str) -> None:
    for step in (
        ["accept", "TS-9", "--at", "20250304T090000"],
        ["handle", "TS-9", "--feedback", "已督促办结", "--at", "20250310T090000"],
        ["conclude", "TS-9", "--finding", "substantiated", "--measure", "诫勉谈话", "--at", "20250312T090000"],
    ):
        assert run(app, "complaints", *step, "-d", data_dir).exit_code == 0
    concluded = run_json(app, "complaints", "show", "TS-9", "-d", data_dir)
    assert concluded["accountability_measure"] == "诫勉谈话"  # conclude keeps its text field, as before
    # The complaint fills the department, the person and the measure; the reason names it.
    recorded = run_json(app, "accountability", "add", "-d", data_dir, "--complaint", "TS-9", "--at", "20250314T100000")
    assert (recorded["measure"], recorded["department"], recorded["person"]) == ("诫勉谈话", UNIT, PERSON)
    assert (recorded["source_kind"], recorded["source_ref"]) == ("complaint", "TS-9")
    assert recorded["reason"] == "投诉 TS-9 多次往返" and recorded["decided_at"] == "2025-03-14 10:00:00"
    node = open_node(Path(data_dir))
    try:
        with node.engine.connect() as conn:
            assert activity_totals(conn) == {("measures_recorded", "诫勉谈话"): 1}
    finally:
        node.close()


def test_add_and_list_as_tables_and_json(app: typer.Typer, data_dir: str) -> None:
    added = run(
        app, "accountability", "add", "-d", data_dir, "--measure", "警告", "--department", UNIT,
        "--post", "审批岗", "--reason", "督办逾期未回复", "--directive", "gd.gz/2025/3",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "问责措施" in added.output and "警告" in added.output and "督办/指令 directive gd.gz/2025/3" in added.output
    run_json(
        app, "accountability", "add", "-d", data_dir, "--measure", "通报批评", "--department", "另一局", "--reason", "x"
    )
    listed = run_json(app, "accountability", "-d", data_dir, "list")  # the group's --data-dir, as in the README
    assert [m["measure"] for m in listed["measures"]] == ["通报批评", "警告"]
    assert listed["by_measure"] == {"通报批评": 1, "警告": 1}
    assert listed["by_department"] == {UNIT: {"警告": 1}, "另一局": {"通报批评": 1}}
    only = run_json(app, "accountability", "list", "-d", data_dir, "--source", "directive", "--limit", "1")
    assert [m["source_ref"] for m in only["measures"]] == ["gd.gz/2025/3"]
    table = run(app, "accountability", "list", "-d", data_dir, "--measure", "警告")
    assert table.exit_code == 0, table.output
    assert "问责登记" in table.output and "审批岗" in table.output and "按措施 by measure" in table.output
    assert "通报批评" not in table.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--measure", "谈话", "--department", UNIT, "--reason", "x"], "'measure'"),
        (["--department", UNIT, "--reason", "x"], "--measure: required"),
        (["--measure", "警告", "--reason", "x"], "'department'"),
        (["--measure", "警告", "--department", UNIT], "'reason'"),
        (["--measure", "警告", "--department", UNIT, "--reason", "x", "--complaint", "TS-0"], "'source_ref'"),
        (["--measure", "警告", "--department", UNIT, "--reason", "x", "--alert", "7"], "no alert 7"),
        (["--measure", "警告", "--department", UNIT, "--reason", "x", "--alert", "7", "--directive", "d"], "at most"),
        (["--measure", "警告", "--department", UNIT, "--reason", "x", "--at", "2025-13-01"], "--at '2025-13-01'"),
    ],
)
def test_errors_name_the_bad_field(app: typer.Typer, data_dir: str, args: list[str], named: str) -> None:
    result = run(app, "accountability", "add", "-d", data_dir, *args)
    assert result.exit_code == 2 and named in result.output, result.output
    assert "Traceback" not in result.output
    assert run_json(app, "accountability", "list", "-d", data_dir)["measures"] == []


def test_list_refuses_a_bad_filter(app: typer.Typer, data_dir: str) -> None:
    for args, named in ((["--measure", "罚款"], "'measure'"), (["--from", "yesterday"], "--from 'yesterday'")):
        result = run(app, "accountability", "list", "-d", data_dir, *args)
        assert result.exit_code == 2 and named in result.output, result.output
