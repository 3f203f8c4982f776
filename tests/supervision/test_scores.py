"""Efficiency scores from the real store (buckets written by the metrics module) and `supnet scores`, on SQLite and
PostgreSQL: volume is not punished, scores stay in 0–100, longer periods weight months by cases handled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from node.app import Node, open_node
from node.cli import scores_cmd
from node.cli.common import console
from node.config import NodeConfig, ScoresConfig, StoreConfig, save_config
from node.supervision import BucketKey, add_to_buckets, department_scores, score_month, scores_ranking

BIG, SMALL, BAD, QUIET = "市场监管局", "住建局", "教育局", "卫健委"

# Per 10 cases: 9 on time, 3 early, one yellow card, 4 ratings (one dissatisfied), no complaint.
RATES = {"received": 10, "completed": 10, "completed_on_time": 9, "completed_early": 3, "yellow_cards": 1}
RATINGS = {"ratings_1": 3, "ratings_5": 1}


def key(day: date, department: str, item: str = "I1") -> BucketKey:
    return BucketKey(day=day, department=department, implementation_code=item, basic_code="B1", item_type_code="01")


def times(counts: dict[str, int], factor: int) -> dict[str, int]:
    return {name: value * factor for name, value in counts.items()}


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    save_config(tmp_path, NodeConfig(id="gd.gz.hp", store=StoreConfig(url=db_url)))
    opened = open_node(tmp_path)
    with opened.engine.begin() as conn:
        add_to_buckets(
            conn,
            {
                # 市场监管局 handles ten times what 住建局 does, at the same rates, spread over days and items.
                key(date(2025, 5, 6), BIG): times(RATES, 6),
                key(date(2025, 5, 20), BIG, "I2"): times(RATES, 4),
                key(date(2025, 5, 21), BIG, "I2"): times(RATINGS, 10),
                key(date(2025, 5, 7), SMALL): RATES,
                key(date(2025, 5, 8), SMALL): RATINGS,
                # 教育局: 2 cases, 30 red cards, 3 substantiated complaints: far below zero before the clamp.
                key(date(2025, 5, 9), BAD): {"received": 2, "red_cards": 30, "complaints_substantiated": 3},
                # June: 市场监管局 busy and clean (100 cases), 住建局 tiny and poor.
                key(date(2025, 6, 3), BIG): {"received": 100, "completed": 100, "completed_on_time": 100},
                key(date(2025, 6, 4), SMALL): {"received": 1, "completed": 1, "yellow_cards": 3},
                # Activity outside the periods asked about; a quiet department with nothing in May.
                key(date(2025, 7, 1), QUIET): {"received": 1},
            },
        )
    yield opened
    opened.close()


def test_the_same_rates_give_the_same_score_whatever_the_volume(node: Node) -> None:
    scores = {s.unit: s for s in department_scores(node, "2025-05")}
    assert scores[BIG].cases_handled == 100 and scores[SMALL].cases_handled == 10
    assert scores[BIG].score == pytest.approx(scores[SMALL].score)
    assert scores[BIG].score == pytest.approx(score_month("2025-05", {**RATES, **RATINGS}, ScoresConfig()).score)
    assert scores[BIG].score < 100
    assert QUIET not in scores


def test_scores_are_clamped(node: Node) -> None:
    bad = {s.unit: s for s in department_scores(node, "2025-05")}[BAD]
    assert bad.score == 0.0 and bad.parts == {"supervision": 0.0, "complaints": 0.0}


def test_longer_periods_weight_months_by_cases_handled(node: Node) -> None:
    may = {s.unit: s.score for s in department_scores(node, "2025-05")}
    june = {s.unit: s.score for s in department_scores(node, "2025-06")}
    assert june[BIG] == 100.0
    quarter = {s.unit: s for s in department_scores(node, "2025-Q2")}
    assert quarter[BIG].score == pytest.approx((100 * may[BIG] + 100 * 100.0) / 200)
    assert quarter[SMALL].score == pytest.approx((10 * may[SMALL] + 1 * june[SMALL]) / 11)
    assert [m.month for m in quarter[SMALL].months] == ["2025-05", "2025-06"]
    for period in ("2025-H1", "2025"):
        assert {s.unit: s.score for s in department_scores(node, period)}[BIG] == pytest.approx(quarter[BIG].score)
    assert [s.unit for s in department_scores(node, "2025-H2")] == [QUIET]
    assert department_scores(node, "2024") == []


def test_ranking_and_scheme_from_config(node: Node) -> None:
    ranking = scores_ranking(node, "2025-05")
    assert [(r.rank, r.score.unit) for r in ranking] == [(1, SMALL), (1, BIG), (3, BAD)]
    harsher = ScoresConfig(yellow_card_per_100_cases=5)
    softer = {s.unit: s.score for s in department_scores(node, "2025-05")}
    harsh = {s.unit: s.score for s in department_scores(node, "2025-05", scheme=harsher)}
    # Supervision: 10 yellow cards per 100 cases × 4 more points each, 0.6 of the weight 1.0.
    assert softer[BIG] - harsh[BIG] == pytest.approx(10 * 4 * 0.6)


def test_cli_scores(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 240)
    app = typer.Typer()
    scores_cmd.register(app)
    runner = CliRunner()
    data_dir = str(node.data_dir)
    result = runner.invoke(app, ["-d", data_dir, "--month", "2025-05", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["period"] == "2025-05" and document["weights"]["supervision"] == 0.6
    rows = document["ranking"]
    assert [(r["rank"], r["unit"]) for r in rows] == [(1, SMALL), (1, BIG), (3, BAD)]
    big = rows[1]
    assert big["cases_handled"] == 100 and set(big["parts"]) == {"supervision", "satisfaction", "complaints"}
    (month,) = big["months"]
    parts = {p["part"]: p for p in month["parts"]}
    assert parts["satisfaction"]["score"] == 75.0 and parts["satisfaction"]["label"] == "群众满意度 satisfaction"
    yellow = next(c for c in parts["supervision"]["components"] if c["name"] == "yellow_cards_per_100_cases")
    assert (yellow["value"], yellow["points"]) == (10.0, -10.0)
    weighted = sum(p["weight"] * p["score"] for p in parts.values()) / sum(p["weight"] for p in parts.values())
    assert big["score"] == pytest.approx(weighted, abs=1e-3)

    table = runner.invoke(app, ["-d", data_dir, "--quarter", "2025-Q2"])
    assert table.exit_code == 0, table.output
    assert (
        "效能考评 2025-Q2" in table.stdout
        and "电子监察" in table.stdout
        and "2025-06: 100.00 × 100 cases" in table.stdout
    )
    month_table = runner.invoke(app, ["-d", data_dir, "--month", "2025-05"])
    assert "黄牌 yellow cards 10 = 10.00 per 100 cases" in month_table.stdout

    both = runner.invoke(app, ["-d", data_dir, "--month", "2025-05", "--year", "2025"])
    assert both.exit_code == 2 and "exactly one" in both.stderr
    bad = runner.invoke(app, ["-d", data_dir, "--month", "2025-5"])
    assert bad.exit_code == 2 and "expected YYYY-MM" in bad.stderr
