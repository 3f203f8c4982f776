"""The efficiency score scheme as pure functions: periods, monthly components, means of months, ranking with ties."""

from __future__ import annotations

import pytest

from node.config import ScoresConfig, parse_config
from node.errors import ConfigError, InvalidArgumentError
from node.supervision import (
    DepartmentScore,
    MonthActivity,
    combine_months,
    early_completion_steps,
    parse_period,
    rank_departments,
    score_month,
)

SCHEME = ScoresConfig()


def activity(
    department: str = "A", month: str = "2025-05", cards: dict[tuple[str, str], int] | None = None, **counts: int
) -> MonthActivity:
    return MonthActivity(department, month, counts, cards or {})


def points(score: DepartmentScore, name: str, area: str | None = None) -> float:
    return sum(c.points for c in score.components if c.name == name and (area is None or c.area == area))


def test_parse_period() -> None:
    assert parse_period("2025-05").months == ((2025, 5),)
    half = parse_period("2025-h2")
    assert (half.kind, half.label, half.months[0], half.months[-1]) == ("half", "2025-H2", (2025, 7), (2025, 12))
    year = parse_period("2024")
    assert (year.first_day.isoformat(), year.end_day.isoformat(), len(year.months)) == ("2024-01-01", "2025-01-01", 12)
    assert parse_period("2025-12").end_day.isoformat() == "2026-01-01"
    for bad in ("2025-13", "2025-H3", "25-05", "May 2025", ""):
        with pytest.raises(InvalidArgumentError, match="period"):
            parse_period(bad)


@pytest.mark.parametrize(
    ("completed", "early", "steps"),
    [
        (0, 0, 0),
        (10, 0, 0),
        (10, 1, 0),  # exactly at the 10% threshold: no further 10% yet
        (10, 2, 1),  # 20%: one step above the threshold
        (10, 3, 2),  # 30% (no float drift: 0.3 - 0.1 is not 0.1999…)
        (1000, 788, 6),  # Guangzhou 2007: 78.8% early completion
        (7, 7, 9),  # 100%
    ],
)
def test_early_completion_steps(completed: int, early: int, steps: int) -> None:
    assert early_completion_steps(completed, early, 0.10) == steps


def test_month_score_components() -> None:
    score = score_month(
        activity(
            completed=10,
            completed_early=8,
            yellow_cards=2,
            red_cards=1,
            ratings_4=1,
            ratings_5=2,
            complaints_substantiated=1,
            cards={("process", "yellow"): 1, ("fees", "red"): 1},
        ),
        SCHEME,
    )
    # 100 + 7 (80% early: 7 steps above 10%) − 5 (process yellow) − 5 (yellow the alerts did not place: time)
    #     − 10 (fees red) − 3 (ratings 4–5) − 3 (substantiated complaint)
    assert score.score == pytest.approx(81.0)
    assert points(score, "early_completion", "time") == 7
    assert points(score, "yellow_cards", "process") == -5
    assert points(score, "yellow_cards", "time") == -5
    assert points(score, "red_cards", "fees") == -10
    assert points(score, "dissatisfied_ratings") == -3
    assert points(score, "complaints_substantiated") == -3
    assert "80.0%" in next(c.detail for c in score.components if c.name == "early_completion")
    assert score.figures["completed"] == 10 and score.months == ("2025-05",)


def test_weights_and_custom_deductions() -> None:
    scheme = ScoresConfig(
        yellow_card=-4,
        red_card=-8,
        weights={"time": 2.0, "satisfaction": 0.5, "process": 1, "fees": 1, "complaints": 0},
    )
    score = score_month(activity(yellow_cards=1, red_cards=1, ratings_5=4, complaints_substantiated=2), scheme)
    # time: 2 × (−4 − 8) = −24; satisfaction: 0.5 × −4 = −2; complaints weighted 0.
    assert score.score == pytest.approx(74.0)
    assert points(score, "complaints_substantiated") == 0


def test_quiet_month_scores_base() -> None:
    score = score_month(activity(received=3, completed=1), SCHEME)
    assert score.score == 100.0 and score.components == ()


def test_half_year_is_the_mean_of_active_months() -> None:
    may = score_month(activity(month="2025-05", yellow_cards=2), SCHEME)  # 90
    june = score_month(activity(month="2025-06", completed=10, completed_early=10), SCHEME)  # 109
    half = combine_months("A", "2025-H1", [may, june])
    assert half.score == pytest.approx(99.5)
    assert half.months == ("2025-05", "2025-06")
    assert points(half, "yellow_cards") == pytest.approx(-5.0)  # −10 over 2 months
    assert points(half, "early_completion") == pytest.approx(4.5)
    assert half.figures["completed"] == 10 and half.figures["yellow_cards"] == 2
    # The components still add up to the score.
    assert half.base + sum(c.points for c in half.components) == pytest.approx(half.score)


def test_ranking_shares_ranks_on_ties() -> None:
    scores = [
        score_month(activity("C", yellow_cards=1), SCHEME),  # 95
        score_month(activity("B"), SCHEME),  # 100
        score_month(activity("A", red_cards=1), SCHEME),  # 90
        score_month(activity("D"), SCHEME),  # 100
        score_month(activity("E", yellow_cards=1), SCHEME),  # 95
    ]
    ranked = [(r.rank, r.score.department) for r in rank_departments(scores)]
    assert ranked == [(1, "B"), (1, "D"), (3, "C"), (3, "E"), (5, "A")]
    assert rank_departments([]) == []


def test_unknown_area_in_the_scheme_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"key 'scores.rule_areas'.*'money'"):
        parse_config({"id": "gd", "scores": {"rule_areas": {"R06": "money"}}})
    with pytest.raises(ConfigError, match=r"key 'scores.weights'.*'Time'"):
        parse_config({"id": "gd", "scores": {"weights": {"Time": 2.0}}})
