"""The by-child sections of ``supnet report`` on a real tree of gRPC nodes (tests.harness.tree), its root on SQLite
and on PostgreSQL: ``--level children`` shows the root's own data and each child's subtree exactly as the signed
drill-down answers give them (summary by child, ranking by score); ``--level subtree`` asks every node below through
the root's server and lists each node's own data, which sums to the root's total."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from federation import counters_to_dict
from federation.proto.v1 import drilldown_pb2 as dd
from node.bulletin import AskingSource, gather_bulletin, report_period
from node.cli import report_cmd, stats_cmd
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.b", "gd.a.x"]
DAYS = {"day_from": "2025-03-01", "day_to": "2025-03-31"}


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd": db_url}, serve_leaves=True)
    try:
        for seed, node_id in enumerate(("gd.a.x", "gd.b", "gd.a", "gd"), start=11):
            built.import_synthetic(node_id, cases=60, seed=seed)
        built.report_up()
        yield built
    finally:
        built.close()


def report(tree: Tree, *args: str) -> Any:
    cli = typer.Typer()
    for module in (report_cmd, stats_cmd):  # two commands, so that typer keeps the command name
        module.register(cli)
    data_dir = str(tree.nodes["gd"].data_dir)
    result = CliRunner().invoke(cli, ["report", "-d", data_dir, "--period", "2025-03", *args])
    assert result.exit_code == 0, result.output
    return result


def test_children_level_shows_each_child_as_the_signed_answers_do(tree: Tree) -> None:
    document = json.loads(report(tree, "--json").stdout)
    with tree.client("gd") as client:
        summary = client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD, **DAYS)).body.summary
        scores = client.ask("gd", ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_SCORE, **DAYS)).body.ranking
    answered = {row.key: counters_to_dict(row.counters) for row in summary.rows}
    units = {unit["node_id"]: unit for unit in document["units"]}
    assert list(units) == ["gd", "gd.a", "gd.b"]
    assert [units[node_id]["scope"] for node_id in units] == ["own", "subtree", "subtree"]
    assert {node_id: unit["counters"] for node_id, unit in units.items()} == answered
    assert document["total"]["counters"] == counters_to_dict(summary.total)
    assert units["gd.a"]["counters"]["received"] > 0 and units["gd.a"]["completeness"]["nodes_in_subtree"] == 2

    [score] = [ranking for ranking in document["rankings"] if ranking["metric"] == "score"]
    assert [(e["node_id"], e["rank"], e["value"]) for e in score["entries"]] == [
        (row.node_id, row.rank, round(row.value, 2)) for row in scores.rows
    ]

    out = tree.root_dir / "gd.xlsx"
    report(tree, "--out", str(out))
    rows = list(openpyxl.load_workbook(out)["各单位指标"].iter_rows(values_only=True))
    received = {row[0]: row[2] for row in rows[3:] if row[0]}
    assert received == {
        "gd GD": answered["gd"]["received"],
        "gd.a": answered["gd.a"]["received"],
        "gd.b": answered["gd.b"]["received"],
        "合计": summary.total.received,
    }


def test_subtree_level_lists_every_node_by_its_own_data(tree: Tree) -> None:
    period = report_period("2025-03")
    with tree.client("gd") as client:
        bulletin = gather_bulletin(tree["gd"], period, level="subtree", source=AskingSource(client))
    assert [(unit.node_id, unit.depth, unit.scope) for unit in bulletin.units] == [
        ("gd", 0, "own"),
        ("gd.a", 1, "own"),
        ("gd.a.x", 2, "own"),
        ("gd.b", 1, "own"),
    ]
    for unit in bulletin.units:
        with tree.client(unit.node_id) as client:
            own = client.ask(unit.node_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD, **DAYS))
        [row] = [row for row in own.body.summary.rows if row.key == unit.node_id]
        assert unit.counters == counters_to_dict(row.counters)
        assert unit.name == unit.node_id.upper()
    summed = {name: sum(unit.counters[name] for unit in bulletin.units) for name in ("received", "completed")}
    assert summed == {name: bulletin.total[name] for name in summed}
    assert all("checked here through its certificate chain" in line for line in bulletin.sources)
    assert {line.split(":")[0] for line in bulletin.sources} == set(IDS)
    [score] = [ranking for ranking in bulletin.rankings if ranking.metric == "score"]
    assert {entry.node_id for entry in score.entries} == set(IDS)

    # The same through the command, asking through the root's server.
    document = json.loads(report(tree, "--level", "subtree", "--address", tree.nodes["gd"].address, "--json").stdout)
    assert [unit["node_id"] for unit in document["units"]] == ["gd", "gd.a", "gd.a.x", "gd.b"]
    assert document["total"]["counters"] == bulletin.total
