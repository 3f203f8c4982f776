"""`supnet notifications`: list (pending and failed stay visible), `send` runs one dispatch, `retry` requeues."""

from __future__ import annotations

import json
import socket
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from node.app import open_node
from node.cli import notifications_cmd
from node.cli.common import console
from node.config import NodeConfig, NotificationsConfig, save_config
from node.supervision import AlertDraft, raise_alerts


def test_send_list_and_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 250)
    with socket.socket() as sock:  # a port with nothing listening: the webhook fails
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    config = NodeConfig(
        id="gd.gz.hp",
        notifications=NotificationsConfig(
            channels=["log", "webhook"], webhook_url=f"http://127.0.0.1:{dead_port}/hook", max_attempts=1
        ),
    )
    save_config(tmp_path, config)
    node = open_node(tmp_path)
    with node.engine.begin() as conn:
        raise_alerts(
            conn,
            [
                AlertDraft(
                    rule_id="R03",
                    subject="case:HP-7",
                    case_no="HP-7",
                    department="住建局",
                    implementation_code="I1",
                    message="超法定时限",
                    raised_at=datetime(2025, 3, 3, 9),
                )
            ],
        )
    node.close()

    app = typer.Typer()
    notifications_cmd.register(app)
    runner = CliRunner()
    data_dir = str(tmp_path)

    sent = runner.invoke(app, ["notifications", "send", "-d", data_dir, "--json"])
    assert sent.exit_code == 0, sent.output
    result = json.loads(sent.stdout)
    assert (result["enqueued"], result["delivered"], result["failed_now"], result["alerts_notified"]) == (2, 1, 1, 0)

    pending = runner.invoke(app, ["notifications", "-d", data_dir, "--pending", "--json"])
    document = json.loads(pending.stdout)
    assert document["counts"] == {"delivered": 1, "failed": 1}
    [failed] = document["notifications"]
    assert (failed["channel"], failed["status"], failed["attempts"]) == ("webhook", "failed", 1)
    assert failed["last_error"]

    table = runner.invoke(app, ["notifications", "-d", data_dir])
    assert table.exit_code == 0, table.output
    assert "住建局" in table.stdout and "pending 0 · delivered 1 · failed 1" in table.stdout

    retried = runner.invoke(app, ["notifications", "retry", str(failed["id"]), "-d", data_dir, "--json"])
    assert json.loads(retried.stdout) == {"requeued": 1}
    status = json.loads(runner.invoke(app, ["notifications", "-d", data_dir, "--status", "pending", "--json"]).stdout)
    assert [n["id"] for n in status["notifications"]] == [failed["id"]]

    bad = runner.invoke(app, ["notifications", "-d", data_dir, "--status", "lost"])
    assert bad.exit_code == 2 and "status must be" in bad.stderr
