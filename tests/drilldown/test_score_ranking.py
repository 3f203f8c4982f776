"""`supnet query TARGET ranking --metric score` over a real tree of gRPC nodes: each child is scored from its
rolled-up counters (never an average of its children's scores), on a root kept on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node
from node.cli.render import ranking_table
from node.supervision import BucketKey, UnitScore, add_to_buckets, monthly_counters, score_period
from tests.harness.tree import Tree

# gd.a has two districts; gd.b is twice the size of gd.a.x with the same rates, plus real imported cases.
CLEAN = {"received": 100, "completed": 100, "completed_on_time": 100, "ratings_1": 10}
POOR = {"received": 10, "completed": 10, "completed_on_time": 5, "yellow_cards": 5, "red_cards": 3, "ratings_5": 4}
MONTHS = (date(2025, 1, 15), date(2025, 2, 12))


def key(day: date, department: str = "局") -> BucketKey:
    return BucketKey(day=day, department=department, implementation_code="I1", basic_code="B1", item_type_code="01")


def add(node: Node, rows: dict[BucketKey, dict[str, int]]) -> None:
    with node.engine.begin() as conn:
        add_to_buckets(conn, rows)


def scored_from_own_buckets(*nodes: Node) -> UnitScore:
    """Score of the nodes' own buckets summed per month: what an ancestor must find for their subtree."""
    months: dict[str, dict[str, int]] = {}
    for node in nodes:
        with node.engine.connect() as conn:
            for per_month in monthly_counters(conn, date(2000, 1, 1), date(2100, 1, 1)).values():
                for month, values in per_month.items():
                    target = months.setdefault(month, {})
                    for name, value in values.items():
                        target[name] = target.get(name, 0) + value
    score = score_period("subtree", "all", months, nodes[0].config.scores)
    assert score is not None
    return score


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", ["gd", "gd.a", "gd.b", "gd.a.x", "gd.a.y"], db_urls={"gd": db_url})
    try:
        add(built["gd.a.x"], {key(MONTHS[0]): CLEAN, key(MONTHS[1], "税务局"): POOR})
        add(built["gd.a.y"], {key(MONTHS[0]): POOR, key(MONTHS[1]): POOR})
        poor_twice = {name: 2 * value for name, value in POOR.items()}
        add(built["gd.b"], {key(MONTHS[0], "甲"): CLEAN, key(MONTHS[0], "乙"): CLEAN, key(MONTHS[1]): poor_twice})
        built.import_synthetic("gd.b", cases=40, seed=5)
        built.report_up()
        yield built
    finally:
        built.close()


def ranking(tree: Tree, target: str, **request: object) -> list[dd.RankingRow]:
    with tree.client("gd") as client:
        answer = client.ask(target, ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_SCORE, **request)).body
    assert answer.ranking.metric == dd.RANKING_METRIC_SCORE
    return list(answer.ranking.rows)


def test_children_are_scored_from_their_rolled_up_counters(tree: Tree) -> None:
    rows = {row.node_id: row for row in ranking(tree, "gd")}
    assert set(rows) == {"gd", "gd.a", "gd.b"}
    city_a = scored_from_own_buckets(tree["gd.a.x"], tree["gd.a.y"])
    assert rows["gd.a"].value == pytest.approx(city_a.score)
    assert rows["gd.a"].numerator == city_a.cases_handled == 100 + 10 + 10 + 10
    assert rows["gd.b"].value == pytest.approx(scored_from_own_buckets(tree["gd.b"]).score)
    # Not the mean of the districts' scores: x (110 cases, mostly clean) outweighs y (20 poor cases).
    x, y = scored_from_own_buckets(tree["gd.a.x"]), scored_from_own_buckets(tree["gd.a.y"])
    assert rows["gd.a"].value != pytest.approx((x.score + y.score) / 2)
    # The root's own data: none, so it goes last, unscored.
    assert rows["gd"].denominator == 0 and rows["gd"].rank == 3
    assert [row.node_id for row in ranking(tree, "gd")][:2] == sorted(
        ["gd.a", "gd.b"], key=lambda node_id: -round(rows[node_id].value, 2)
    )


def test_ranking_one_level_down_and_by_period(tree: Tree) -> None:
    rows = {row.node_id: row for row in ranking(tree, "gd.a")}
    x, y = scored_from_own_buckets(tree["gd.a.x"]), scored_from_own_buckets(tree["gd.a.y"])
    assert (rows["gd.a.x"].value, rows["gd.a.y"].value) == (pytest.approx(x.score), pytest.approx(y.score))
    assert (rows["gd.a.x"].rank, rows["gd.a.y"].rank) == (1, 2)
    worst = ranking(tree, "gd.a", worst_first=True)
    assert [row.node_id for row in worst] == ["gd.a.y", "gd.a.x", "gd.a"]
    # January only: x is clean (100), y poor; the period's counters travel with the row.
    january = {row.node_id: row for row in ranking(tree, "gd.a", day_from="2025-01-01", day_to="2025-01-31")}
    assert january["gd.a.x"].value == 100.0 and january["gd.a.x"].counters.received == 100
    assert january["gd.a.y"].value == pytest.approx(y.months[0].score)


def test_twice_the_volume_at_the_same_rates_ranks_level(tree: Tree) -> None:
    """Before the imported cases (March), gd.b is gd.a.x twice over: the same score, a shared rank, at the root."""
    rows = {row.node_id: row for row in ranking(tree, "gd", day_to="2025-02-28")}
    x = {row.node_id: row for row in ranking(tree, "gd.a", day_to="2025-02-28")}["gd.a.x"]
    assert rows["gd.b"].numerator == 2 * x.numerator == 220
    assert rows["gd.b"].value == pytest.approx(x.value)


def test_the_ranking_table_shows_scores(tree: Tree) -> None:
    answer = dd.RankingAnswer(metric=dd.RANKING_METRIC_SCORE, rows=ranking(tree, "gd.a"))
    console = Console(width=200, record=True)
    console.print(ranking_table(answer, "gd.a: ranking of children"))
    text = console.export_text()
    assert "by score" in text and f"{answer.rows[0].value:.2f}" in text and "110 cases" in text
