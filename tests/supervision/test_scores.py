"""Efficiency scores from the real store: buckets written by the metrics module, cards raised by the alerts module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from node.app import Node, open_node
from node.cli import scores_cmd
from node.cli.common import console
from node.config import NodeConfig, ScoresConfig, StoreConfig, save_config
from node.supervision import AlertDraft, BucketKey, add_to_buckets, department_scores, raise_alerts, scores_ranking

SCJ, ZJJ, JYJ, WJW = "市场监管局", "住建局", "教育局", "卫健委"


def key(day: date, department: str, item: str = "I1") -> BucketKey:
    return BucketKey(day=day, department=department, implementation_code=item, basic_code="B1", item_type_code="01")


def card(rule_id: str, department: str, raised_at: datetime, n: int) -> AlertDraft:
    return AlertDraft(
        rule_id=rule_id,
        subject=f"case:{department}-{rule_id}-{n}",
        department=department,
        implementation_code="I1",
        message="test",
        raised_at=raised_at,
        case_no=f"{department}-{n}",
        basic_code="B1",
        item_type_code="01",
    )


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    save_config(tmp_path, NodeConfig(id="gd.gz.hp", store=StoreConfig(url=db_url)))
    opened = open_node(tmp_path)
    with opened.engine.begin() as conn:
        add_to_buckets(
            conn,
            {
                # 市场监管局, May: 8 of 10 early over two items and days; two 5-ratings; one substantiated complaint.
                key(date(2025, 5, 6), SCJ): {"received": 6, "completed": 6, "completed_early": 5, "ratings_5": 2},
                key(date(2025, 5, 20), SCJ, "I2"): {"completed": 4, "completed_early": 3},
                key(date(2025, 5, 28), SCJ, ""): {"complaints_concluded": 1, "complaints_substantiated": 1},
                # June: a quiet but active month.
                key(date(2025, 6, 3), SCJ): {"received": 2, "completed": 2},
                key(date(2025, 5, 7), ZJJ): {"received": 5, "completed": 5},
                key(date(2025, 5, 8), JYJ): {"received": 4, "completed": 4, "completed_early": 2},
                key(date(2025, 5, 9), WJW): {"received": 1},
                # Activity outside the periods asked about.
                key(date(2025, 7, 1), ZJJ): {"received": 1},
                key(date(2025, 4, 30), JYJ): {"red_cards": 0, "received": 1},
            },
        )
        raise_alerts(
            conn,
            [
                card("R02", SCJ, datetime(2025, 5, 12, 10), 1),  # yellow, time
                card("R06", SCJ, datetime(2025, 5, 13, 10), 2),  # red, fees
                card("R07", JYJ, datetime(2025, 5, 14, 10), 3),  # yellow, process
                card("R01", ZJJ, datetime(2025, 5, 15, 10), 4),  # a reminder: no deduction
            ],
        )
    yield opened
    opened.close()


def by_department(node: Node, period: str) -> dict[str, float]:
    return {s.department: round(s.score, 4) for s in department_scores(node, period)}


def test_month_scores_and_ranking(node: Node) -> None:
    ranking = scores_ranking(node, "2025-05")
    # 市场监管局: 100 + 7 (80% early) − 5 (R02 yellow) − 10 (R06 red) − 2 (ratings 5) − 3 (complaint) = 87
    # 教育局: 100 + 4 (50% early) − 5 (R07 yellow) = 99; 住建局 (a reminder only) and 卫健委: 100.
    assert [(r.rank, r.score.department, round(r.score.score, 2)) for r in ranking] == [
        (1, ZJJ, 100.0),
        (1, WJW, 100.0),
        (3, JYJ, 99.0),
        (4, SCJ, 87.0),
    ]
    scj = ranking[-1].score
    areas = {(c.area, c.name): c.points for c in scj.components}
    assert areas == {
        ("time", "yellow_cards"): -5.0,
        ("fees", "red_cards"): -10.0,
        ("time", "early_completion"): 7.0,
        ("satisfaction", "dissatisfied_ratings"): -2.0,
        ("complaints", "complaints_substantiated"): -3.0,
    }
    assert scj.figures["completed"] == 10 and scj.figures["yellow_cards"] == 1
    assert {(c.area, c.name) for c in ranking[2].score.components} == {
        ("process", "yellow_cards"),
        ("time", "early_completion"),
    }


def test_half_and_year_are_means_of_active_months(node: Node) -> None:
    half = {s.department: s for s in department_scores(node, "2025-H1")}
    assert half[SCJ].months == ("2025-05", "2025-06") and half[SCJ].score == pytest.approx((87 + 100) / 2)
    # 教育局 had activity in April (one case received): its half-year is the mean of April (100) and May (99).
    assert half[JYJ].months == ("2025-04", "2025-05") and half[JYJ].score == pytest.approx(99.5)
    assert ZJJ in half and half[ZJJ].months == ("2025-05",)
    year = by_department(node, "2025")
    assert year[ZJJ] == 100.0 and year[SCJ] == pytest.approx(93.5)
    assert by_department(node, "2025-H2") == {ZJJ: 100.0}
    assert by_department(node, "2024") == {}


def test_scheme_from_config(node: Node) -> None:
    scheme = ScoresConfig(red_card=-20, weights={"fees": 0.5}, early_completion_bonus_per_10pct=0.5)
    scores = {s.department: s.score for s in department_scores(node, "2025-05", scheme=scheme)}
    # 市场监管局: 100 + 3.5 − 5 − 0.5 × 20 − 2 − 3 = 83.5
    assert scores[SCJ] == pytest.approx(83.5)


def test_cli_scores(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 220)
    app = typer.Typer()
    scores_cmd.register(app)
    runner = CliRunner()
    data_dir = str(node.data_dir)
    result = runner.invoke(app, ["-d", data_dir, "--month", "2025-05", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["period"] == "2025-05"
    assert [(r["rank"], r["department"], r["score"]) for r in document["ranking"]][-1] == (4, SCJ, 87.0)

    table = runner.invoke(app, ["-d", data_dir, "--half", "2025-H1"])
    assert table.exit_code == 0, table.output
    assert "效能考评 2025-H1" in table.stdout and "93.50" in table.stdout and "red_cards" in table.stdout

    both = runner.invoke(app, ["-d", data_dir, "--month", "2025-05", "--year", "2025"])
    assert both.exit_code == 2 and "exactly one" in both.stderr
    bad = runner.invoke(app, ["-d", data_dir, "--month", "2025-5"])
    assert bad.exit_code == 2 and "expected YYYY-MM" in bad.stderr
