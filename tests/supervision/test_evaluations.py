"""Evaluations: ratings 4–5 open a follow-up on import (the real importer + listener); closing it; figures; CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import typer
from sqlalchemy import insert
from typer.testing import CliRunner

from node.app import Node, open_node
from node.cli import evaluations_cmd
from node.config import NodeConfig, StoreConfig, save_config
from node.errors import InvalidStateError, NotFoundError, ValidationError
from node.ingest import Importer
from node.store import Evaluation
from node.supervision import (
    EvaluationFollowupListener,
    close_followup,
    complaint_listeners,
    evaluation_figures,
    list_evaluations,
)

ITEM = {
    "implementation_code": "440112002",
    "basic_code": "000102002",
    "name": "建筑工程施工许可",
    "type_code": "01",
    "level_code": "4",
    "body_name": "住建局",
    "body_code": "11440112MB2C54321Y",
    "legal_limit": "20",
    "promised_limit": "7",
    "fee_flag": "0",
}


def records(ratings: list[int]) -> list[tuple[str, int, dict[str, str]]]:
    out: list[tuple[str, int, dict[str, str]]] = [("item", 1, ITEM)]
    for n, rating in enumerate(ratings, start=1):
        case_no = f"ZJ-{n}"
        out.append(
            (
                "acceptance",
                n,
                {
                    "case_no": case_no,
                    "implementation_code": "440112002",
                    "department": "住建局",
                    "accepted_at": "20250303T100000",
                },
            )
        )
        # Only a completed case is rated.
        out.append(("completion", n, {"case_no": case_no, "completed_at": "20250310T100000"}))
        out.append(
            (
                "evaluation",
                n,
                {
                    "case_no": case_no,
                    "evaluated_at": f"2025031{n % 10}T120000",
                    "satisfaction_code": str(rating),
                    "channel": "app",
                },
            )
        )
    return out


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    save_config(tmp_path, NodeConfig(id="gd.gz.hp", store=StoreConfig(url=db_url)))
    opened = open_node(tmp_path)
    summary = Importer(opened, listeners=complaint_listeners(opened)).import_records(records([1, 2, 3, 4, 5]))
    assert summary.rejected == 0, summary.errors
    yield opened
    opened.close()


def test_ratings_four_and_five_open_a_followup_that_must_be_closed(node: Node) -> None:
    status = {v.case_no: (v.satisfaction_code, v.followup_status) for v in list_evaluations(node)}
    assert status == {
        "ZJ-1": (1, "none"),
        "ZJ-2": (2, "none"),
        "ZJ-3": (3, "none"),
        "ZJ-4": (4, "open"),
        "ZJ-5": (5, "open"),
    }
    open_ones = list_evaluations(node, open_followups=True)
    assert sorted(v.case_no for v in open_ones) == ["ZJ-4", "ZJ-5"]
    assert all(v.department == "住建局" for v in open_ones)

    five = next(v for v in open_ones if v.case_no == "ZJ-5")
    closed = close_followup(node, five.id, "  已回访，申请人认可整改  ", now=datetime(2025, 3, 20, 9))
    assert (closed.followup_status, closed.followup_note) == ("closed", "已回访，申请人认可整改")
    assert closed.followup_closed_at == datetime(2025, 3, 20, 9)
    assert [v.case_no for v in list_evaluations(node, open_followups=True)] == ["ZJ-4"]

    figures = evaluation_figures(node)
    assert figures.ratings == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert figures.satisfaction_rate == pytest.approx(0.6)
    assert (figures.followups_open, figures.followups_closed) == (1, 1)


def test_close_followup_errors(node: Node) -> None:
    by_case = {v.case_no: v.id for v in list_evaluations(node)}
    with pytest.raises(NotFoundError, match="evaluation 9999"):
        close_followup(node, 9999, "note")
    with pytest.raises(ValidationError, match="field 'note'"):
        close_followup(node, by_case["ZJ-4"], " ")
    with pytest.raises(InvalidStateError, match="has no follow-up"):
        close_followup(node, by_case["ZJ-1"], "note")
    close_followup(node, by_case["ZJ-4"], "done")
    with pytest.raises(InvalidStateError, match="already closed"):
        close_followup(node, by_case["ZJ-4"], "again")


def test_listener_opens_followups_of_new_poor_ratings(node: Node) -> None:
    # A row written with no follow-up (as by a writer that does not set it): the listener opens it, once.
    with node.engine.begin() as conn:
        conn.execute(
            insert(Evaluation).values(
                case_no="ZJ-1", evaluated_at=datetime(2025, 3, 21, 8), satisfaction_code=5, followup_status="none"
            )
        )
        new = [{"case_no": "ZJ-1", "evaluated_at": datetime(2025, 3, 21, 8), "satisfaction_code": 5}]
        EvaluationFollowupListener(node).on_records(conn, "evaluation", new, datetime(2025, 3, 21, 8))
        EvaluationFollowupListener(node).on_records(conn, "complaint", new, datetime(2025, 3, 21, 8))
    opened = [v for v in list_evaluations(node, open_followups=True) if v.evaluated_at == datetime(2025, 3, 21, 8)]
    assert [(v.case_no, v.satisfaction_code) for v in opened] == [("ZJ-1", 5)]


def test_cli_list_and_close(node: Node) -> None:
    app = typer.Typer()
    evaluations_cmd.register(app)
    runner = CliRunner()
    data_dir = str(node.data_dir)
    listed = runner.invoke(app, ["evaluations", "-d", data_dir, "--open-followups", "--json"])
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert sorted(e["case_no"] for e in document["evaluations"]) == ["ZJ-4", "ZJ-5"]
    assert document["figures"]["followups_open"] == 2

    target = document["evaluations"][0]["id"]
    closed = runner.invoke(app, ["evaluations", "close", str(target), "--note", "已回访", "-d", data_dir])
    assert closed.exit_code == 0, closed.output
    assert f"evaluation {target}" in closed.stdout
    table = runner.invoke(app, ["evaluations", "-d", data_dir])
    assert table.exit_code == 0 and "满意率 60.0%" in table.stdout
    missing_note = runner.invoke(app, ["evaluations", "close", str(target), "-d", data_dir])
    assert missing_note.exit_code == 2 and "note" in missing_note.stderr
