"""`supnet items` on a real node: list, show, history, retire, reactivate, explain — tables and --json."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from node.cli import items_cmd
from node.cli.common import console
from node.errors import ExitCode
from tests.harness.clocks import Clock
from tests.harness.rules import ITEM, ITEM_CODE, items, load, make_node


@pytest.fixture
def data_dir(tmp_path: Path, db_url: str) -> str:
    node = make_node(tmp_path, db_url, Clock(datetime(2025, 3, 20, 12)))
    load(node, [*items(), ("item", 0, {**ITEM, "promised_limit": "8", "effective_from": "2025-03-05T00:00:00"})])
    node.close()
    return str(tmp_path)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 200)
    cli = typer.Typer()
    items_cmd.register(cli)
    return cli


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def run_json(app: typer.Typer, *args: str) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_items_commands(app: typer.Typer, data_dir: str) -> None:
    listed = run_json(app, "items", "-d", data_dir, "list")
    assert len(listed["items"]) == 3 and listed["labels"]["status"] == "状态 status"
    flagged = run_json(app, "items", "-d", data_dir, "list", "--flagged")["items"]
    assert [i["implementation_code"] for i in flagged] == [ITEM_CODE]

    shown = run_json(app, "items", "show", ITEM_CODE, "-d", data_dir)
    assert (shown["version"], shown["promised_limit"], shown["status_label"]) == (2, 8, "在用 in force")
    assert shown["effective_from"] == "2025-03-05T00:00:00+08:00" and shown["flagged"] is True
    assert shown["compression"] == pytest.approx(0.8)

    history = run_json(app, "items", "history", ITEM_CODE, "-d", data_dir)
    assert [(v["version"], v["effective_from"]) for v in history["versions"]] == [
        (1, None),
        (2, "2025-03-05T00:00:00+08:00"),
    ]

    explained = run_json(app, "items", "explain", ITEM_CODE, "--text", "需专家评审", "-d", data_dir)
    assert (explained["explanation"], explained["flagged"]) == ("需专家评审", False)

    missing_reason = run(app, "items", "retire", ITEM_CODE, "-d", data_dir)
    assert missing_reason.exit_code == 2 and "reason" in missing_reason.output
    retired = run_json(
        app, "items", "retire", ITEM_CODE, "--reason", "并入一件事", "--at", "20250318T090000", "-d", data_dir
    )
    assert (retired["status"], retired["retired_at"]) == ("retired", "2025-03-18T09:00:00+08:00")
    assert [
        i["implementation_code"] for i in run_json(app, "items", "-d", data_dir, "list", "--status", "retired")["items"]
    ] == [ITEM_CODE]
    back = run_json(app, "items", "reactivate", ITEM_CODE, "-d", data_dir)
    assert back["status"] == "in_force"
    changes = run_json(app, "items", "history", ITEM_CODE, "-d", data_dir)["status_changes"]
    assert [c["action_label"] for c in changes] == ["取消 retire", "恢复 reactivate"]

    table = run(app, "items", "-d", data_dir, "list")
    assert table.exit_code == 0 and "事项目录" in table.output and "在用 in force 3" in table.output
    unknown = run(app, "items", "show", "NOPE", "-d", data_dir)
    assert unknown.exit_code == ExitCode.NOT_FOUND and "NOT_FOUND" in unknown.output
