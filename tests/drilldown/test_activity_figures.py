"""Directives and accountability in the drill-down figures over a real tree of gRPC nodes, the root on SQLite and on
PostgreSQL: the ranking by directives overdue (lower is better) for a period, and ``supnet query X summary --by
child`` showing each child's directives and measures by kind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from federation import SupnetError
from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node
from node.cli import query_cmd
from node.cli.common import console
from node.supervision import record_activity, record_measure
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.b", "gd.c", "gd.a.x"]
FROM, TO = "2025-03-01", "2025-03-20"


def count(node: Node, day: date, metric: str, kind: str, n: int) -> None:
    with node.engine.begin() as conn:
        record_activity(conn, day, metric, kind, n)


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd": db_url})
    try:
        count(built["gd.a.x"], date(2025, 3, 5), "directives_overdue", "supervise", 2)
        count(built["gd.a.x"], date(2025, 3, 12), "directives_overdue", "rectify", 1)
        count(built["gd.a.x"], date(2025, 3, 4), "directives_received", "supervise", 4)
        count(built["gd.b"], date(2025, 3, 6), "directives_overdue", "warning", 1)
        count(built["gd.b"], date(2025, 3, 6), "directives_received", "warning", 9)  # not what is ranked
        count(built["gd.c"], date(2025, 2, 10), "directives_overdue", "supervise", 5)  # before the period
        decided_at = datetime(2025, 3, 7, 11)
        record_measure(built["gd.b"], measure="诫勉谈话", department="某局", reason="逾期", decided_at=decided_at)
        built.report_up()
        yield built
    finally:
        built.close()


def ranking(tree: Tree, **request: object) -> list[tuple[str, int, int]]:
    message = dd.RankingRequest(metric=dd.RANKING_METRIC_DIRECTIVES_OVERDUE, **request)  # type: ignore[arg-type]
    with tree.client("gd") as client:
        answer = client.ask("gd", ranking=message).body.ranking
    return [(row.node_id, row.rank, row.numerator) for row in answer.rows]


def test_children_rank_by_directives_overdue_in_the_period(tree: Tree) -> None:
    assert ranking(tree, day_from=FROM, day_to=TO) == [
        ("gd", 1, 0),  # the province's own data: nothing overdue
        ("gd.c", 1, 0),  # its overdue directive is of February
        ("gd.b", 3, 1),
        ("gd.a", 4, 3),  # its district's, every kind
    ]
    assert [entry[0] for entry in ranking(tree, day_from=FROM, day_to=TO, worst_first=True)] == [
        "gd.a",
        "gd.b",
        "gd",
        "gd.c",
    ]
    assert ranking(tree, worst_first=True)[0] == ("gd.c", 1, 5)  # every day
    with pytest.raises(SupnetError, match="not counted per item"):
        ranking(tree, basic_code="000101001")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 250)
    cli = typer.Typer()
    query_cmd.register(cli)
    return cli


def query(app: typer.Typer, tree: Tree, *args: str) -> str:
    address = tree.nodes["gd"].address
    result = CliRunner().invoke(app, ["query", "gd", *args, "-d", str(tree.nodes["gd"].data_dir), "--address", address])
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_the_summary_by_child_shows_directives_and_measures_per_child(app: typer.Typer, tree: Tree) -> None:
    output = query(app, tree, "summary", "--by", "child", "--from", FROM, "--to", TO)
    title = f"gd: directives (督办) and accountability (问责), {FROM} – {TO}"
    assert title in output
    table = output.split(title, 1)[1].splitlines()
    [city_a] = [line for line in table if line.lstrip("│ ").startswith("gd.a ")]
    assert "4 (督办 4)" in city_a and "3 (督办 2, 整改 1)" in city_a  # received; overdue by kind
    [city_b] = [line for line in table if line.lstrip("│ ").startswith("gd.b ")]
    assert "9 (告诫书 9)" in city_b and "1 (诫勉谈话 1)" in city_b
    assert "4 (督办 2, 告诫书 1, 整改 1)" in output  # the total of overdue, over every child and kind
    ranked = query(app, tree, "ranking", "--metric", "directives-overdue", "--from", FROM, "--to", TO)
    assert "by directives overdue" in ranked
