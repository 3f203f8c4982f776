"""``supnet audit`` on a real node (SQLite and PostgreSQL): administrative commands leave entries in the same
transaction as their action; listing filters; ``--verify --json`` parsed, and exit 7 naming where the chain breaks."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from node.app import open_node
from node.cli import alerts_cmd, audit_cmd, evaluations_cmd, scan_cmd
from node.cli.common import console
from node.errors import ExitCode
from node.store import AuditLogEntry
from tests.harness.clocks import Clock
from tests.harness.rules import acceptance, items, load, make_node


@pytest.fixture
def data_dir(tmp_path: Path, db_url: str) -> str:
    node = make_node(tmp_path, db_url, Clock(datetime(2025, 3, 3, 12)))
    load(node, [*items(), acceptance("AUD-1")])
    node.close()
    return str(tmp_path)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 200)
    cli = typer.Typer()
    for module in (alerts_cmd, audit_cmd, evaluations_cmd, scan_cmd):
        module.register(cli)
    return cli


def run(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def run_json(app: typer.Typer, *args: str, exit_code: int = 0) -> Any:
    result = run(app, *args, "--json")
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def test_admin_actions_leave_entries_and_verify_finds_tampering(app: typer.Typer, data_dir: str) -> None:
    actor = f"{getpass.getuser()}@gd.gz.hp"
    [alert] = run_json(app, "scan", "-d", data_dir, "--now", "20250311T090000")["alerts"]
    assert run(app, "alerts", "ack", str(alert["id"]), "-d", data_dir, "--by", "王科长").exit_code == 0
    refused = run(app, "alerts", "ack", str(alert["id"]), "-d", data_dir)
    assert refused.exit_code == ExitCode.CONFLICT  # already acknowledged: refused, and nothing recorded for it
    assert run(app, "alerts", "correct", str(alert["id"]), "-d", data_dir, "--note", "已补办").exit_code == 0
    assert run(app, "evaluations", "close", "999", "-d", data_dir, "--note", "x").exit_code == ExitCode.NOT_FOUND

    listed = run_json(app, "audit", "-d", data_dir)
    entries = listed["entries"]
    assert [(e["seq"], e["action"], e["target"], e["actor"]) for e in entries] == [
        (2, "alert.corrected", f"alert:{alert['id']}", actor),
        (1, "alert.acknowledged", f"alert:{alert['id']}", actor),
    ]
    assert entries[1]["detail"] == {"by": "王科长", "rule": alert["rule_id"], "subject": "case:AUD-1"}
    assert entries[0]["detail"]["note"] == "已补办"
    assert listed["head"] == {"seq": 2, "hash": entries[0]["hash"]}
    assert [e["seq"] for e in run_json(app, "audit", "-d", data_dir, "--action", "alert.ack*")["entries"]] == [1]
    assert run_json(app, "audit", "-d", data_dir, "--actor", "nobody@gd", "--since", "7d")["entries"] == []
    table = run(app, "audit", "-d", data_dir)
    assert table.exit_code == 0 and "alert.acknowledged" in table.stdout and "王科长" in table.stdout

    verified = run_json(app, "audit", "-d", data_dir, "--verify")
    assert verified == {
        "ok": True,
        "entries": 2,
        "head": listed["head"],
        "first_broken_seq": None,
        "kind": None,
        "reason": "",
        "problems": [],
    }
    head = f"2:{entries[0]['hash']}"
    assert run(app, "audit", "-d", data_dir, "--verify", "--expect-head", head).exit_code == 0
    bad_head = run(app, "audit", "-d", data_dir, "--verify", "--expect-head", "2:xyz")
    assert bad_head.exit_code == 2 and "expected SEQ:HASH" in bad_head.output

    # Someone with database access softens the record of who acknowledged the alert.
    node = open_node(Path(data_dir))
    try:
        with node.engine.begin() as conn:
            conn.execute(update(AuditLogEntry.__table__).where(AuditLogEntry.seq == 1).values(detail='{"by":"nobody"}'))
    finally:
        node.close()
    broken = run_json(app, "audit", "-d", data_dir, "--verify", exit_code=ExitCode.VERIFICATION_FAILED)
    assert (broken["ok"], broken["first_broken_seq"], broken["kind"]) == (False, 1, "edited")
    assert broken["problems"] == ["entry #1: hash does not match its content (edited)"]
    text = run(app, "audit", "-d", data_dir, "--verify")
    assert text.exit_code == ExitCode.VERIFICATION_FAILED
    assert "audit log BROKEN at #1 (edited)" in text.stdout
