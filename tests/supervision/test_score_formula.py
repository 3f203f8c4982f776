"""The efficiency score scheme as pure functions: periods, rate-based parts, clamping, weighting, config checks."""

from __future__ import annotations

import pytest

from node.config import ScoresConfig, parse_config
from node.errors import ConfigError, InvalidArgumentError
from node.supervision import MonthScore, UnitScore, parse_period, rank_scores, score_month, score_period

SCHEME = ScoresConfig()


def part(month: MonthScore, name: str) -> float:
    return next(p.score for p in month.parts if p.part == name)


def points(month: MonthScore, component: str) -> float:
    return sum(c.points for p in month.parts for c in p.components if c.name == component)


def scaled(counts: dict[str, int], factor: int) -> dict[str, int]:
    return {name: value * factor for name, value in counts.items()}


# 40 cases, 36 on time, 12 early, 2 returned once, 1 past its legal limit (R02 yellow, R03 red, R04 red),
# 20 ratings of which 2 dissatisfied, 2 complaints accepted and concluded, 1 substantiated.
TYPICAL = {
    "received": 40,
    "completed": 40,
    "completed_on_time": 36,
    "completed_early": 12,
    "return_steps": 3,
    "cases_returned": 2,
    "yellow_cards": 1,
    "red_cards": 2,
    "ratings_1": 15,
    "ratings_3": 3,
    "ratings_5": 2,
    "complaints_received": 2,
    "complaints_accepted": 2,
    "complaints_concluded": 2,
    "complaints_substantiated": 1,
}


def test_parse_period() -> None:
    assert parse_period("2025-05").months == ((2025, 5),)
    quarter = parse_period("2025-q3")
    assert (quarter.kind, quarter.label, quarter.months) == ("quarter", "2025-Q3", ((2025, 7), (2025, 8), (2025, 9)))
    half = parse_period("2025-h2")
    assert (half.kind, half.label, half.months[0], half.months[-1]) == ("half", "2025-H2", (2025, 7), (2025, 12))
    year = parse_period("2024")
    assert (year.first_day.isoformat(), year.end_day.isoformat(), len(year.months)) == ("2024-01-01", "2025-01-01", 12)
    assert parse_period("2025-Q4").end_day.isoformat() == "2026-01-01"
    for bad in ("2025-13", "2025-H3", "2025-Q5", "25-05", "May 2025", ""):
        with pytest.raises(InvalidArgumentError, match="period"):
            parse_period(bad)


def test_month_parts_from_rates() -> None:
    month = score_month("2025-05", TYPICAL, SCHEME)
    assert month.cases_handled == 40
    # Supervision: cards 1 and 2 per 40 cases = 2.5 and 5 per 100 → −2.5 and −10; 10% completed late → −2;
    # return rate: cases returned ÷ received as metric_definitions defines it; early 30% → +2.
    assert points(month, "yellow_cards_per_100_cases") == pytest.approx(-2.5)
    assert points(month, "red_cards_per_100_cases") == pytest.approx(-10.0)
    assert points(month, "overdue_rate") == pytest.approx(-2.0)
    assert points(month, "early_rate") == pytest.approx(2.0)
    returned = points(month, "return_rate")
    assert returned in (pytest.approx(-1.0), pytest.approx(-1.5))  # 2/40 once the shared definition moves; 3/40 now
    assert part(month, "supervision") == pytest.approx(100 - 2.5 - 10 - 2 + 2 + returned)
    assert part(month, "satisfaction") == pytest.approx(90.0)
    # One substantiated complaint per 40 cases = 2.5 per 100 × 10; all accepted complaints concluded.
    assert part(month, "complaints") == pytest.approx(75.0)
    expected = (0.6 * part(month, "supervision") + 0.25 * 90 + 0.15 * 75) / 1.0
    assert month.score == pytest.approx(expected)


def test_volume_is_not_punished() -> None:
    """A department with ten times the cases and the same rates gets the same score."""
    small = score_month("2025-05", TYPICAL, SCHEME)
    big = score_month("2025-05", scaled(TYPICAL, 10), SCHEME)
    assert big.score == pytest.approx(small.score)
    assert [p.score for p in big.parts] == pytest.approx([p.score for p in small.parts])


def test_one_case_past_its_legal_limit_does_not_cost_25() -> None:
    clean = {"received": 200, "completed": 200, "completed_on_time": 200}
    late = {**clean, "completed_on_time": 199, "yellow_cards": 1, "red_cards": 2}
    cost = score_month("2025-05", clean, SCHEME).score - score_month("2025-05", late, SCHEME).score
    # Supervision loses 0.5 + 2 + 0.1 = 2.6; without ratings it carries 0.6 of the weight 0.75 (with complaints):
    # 2.08 points for one case in 200 (the per-card scheme took 25).
    assert cost == pytest.approx(2.6 * 0.6 / 0.75)


def test_scores_are_clamped_to_0_100() -> None:
    disaster = {"received": 2, "completed": 2, "red_cards": 40, "ratings_5": 3, "complaints_substantiated": 5}
    worst = score_month("2025-05", disaster, SCHEME)
    assert worst.score == 0.0
    assert all(0 <= p.score <= 100 for p in worst.parts)
    assert min(p.unclamped for p in worst.parts) < -1000  # the raw deductions, kept for the explanation
    perfect = score_month(
        "2025-05", {"received": 10, "completed": 10, "completed_on_time": 10, "completed_early": 10}, SCHEME
    )
    assert points(perfect, "early_rate") == pytest.approx(9.0)
    assert perfect.score == 100.0


def test_parts_without_data_leave_their_weight_to_the_others() -> None:
    month = score_month("2025-05", {"received": 10, "completed": 10, "completed_on_time": 10}, SCHEME)
    assert {p.part for p in month.parts} == {"supervision", "complaints"}  # no ratings: no satisfaction part
    assert month.score == 100.0
    only_supervision = ScoresConfig(weights={"supervision": 1, "satisfaction": 0, "complaints": 0})
    low = score_month("2025-05", {"received": 10, "yellow_cards": 5, "ratings_5": 10}, only_supervision)
    assert low.score == pytest.approx(50.0)


def test_year_weights_months_by_cases_handled() -> None:
    busy = {"received": 900, "completed": 900, "completed_on_time": 900}
    quiet = {"received": 100, "completed": 100, "completed_on_time": 100, "yellow_cards": 50}  # 50 per 100 → 50
    year = score_period("A", "2025", {"2025-01": busy, "2025-02": quiet, "2025-03": {}}, SCHEME)
    assert isinstance(year, UnitScore)
    quiet_month = score_month("2025-02", quiet, SCHEME).score
    assert year.score == pytest.approx((900 * 100 + 100 * quiet_month) / 1000)  # not (100 + quiet) / 2
    assert [m.month for m in year.months] == ["2025-01", "2025-02"]  # a month without activity is left out
    assert year.cases_handled == 1000 and year.figures["yellow_cards"] == 50
    assert year.parts["supervision"] == pytest.approx((900 * 100 + 100 * 50) / 1000)
    assert score_period("A", "2025", {"2025-03": {}}, SCHEME) is None
    # A month with cards but no case handled still counts, as one case.
    cards_only = score_period("A", "2025", {"2025-01": busy, "2025-04": {"red_cards": 1}}, SCHEME)
    assert cards_only is not None and [m.weight for m in cards_only.months] == [900, 1]


def test_ranking_shares_ranks_on_ties() -> None:
    def unit(name: str, yellow: int) -> UnitScore:
        score = score_period(name, "2025-05", {"2025-05": {"received": 100, "yellow_cards": yellow}}, SCHEME)
        assert score is not None
        return score

    ranked = [(r.rank, r.score.unit) for r in rank_scores([unit("C", 5), unit("B", 0), unit("A", 9), unit("D", 0)])]
    assert ranked == [(1, "B"), (1, "D"), (3, "C"), (4, "A")]
    assert rank_scores([]) == []


def test_scheme_config_is_validated_and_documented_defaults_hold() -> None:
    config = parse_config({"id": "gd", "scores": {"red_card_per_100_cases": 3, "weights": {"supervision": 1}}})
    assert config.scores.red_card_per_100_cases == 3 and config.scores.weights.satisfaction == 0.25
    with pytest.raises(ConfigError, match=r"key 'scores.weights.assessment'"):
        parse_config({"id": "gd", "scores": {"weights": {"assessment": 0.1}}})
    with pytest.raises(ConfigError, match=r"key 'scores.weights'.*at least one"):
        parse_config({"id": "gd", "scores": {"weights": {"supervision": 0, "satisfaction": 0, "complaints": 0}}})
    with pytest.raises(ConfigError, match=r"key 'scores.yellow_card_per_100_cases'"):
        parse_config({"id": "gd", "scores": {"yellow_card_per_100_cases": -1}})
    with pytest.raises(ConfigError, match=r"key 'scores'.*weights per area"):
        parse_config({"id": "gd", "scores": {"weights": {"time": 2}}})


def test_configs_saved_with_the_per_card_scheme_still_load() -> None:
    legacy = {
        "base": 100.0,
        "yellow_card": -5.0,
        "red_card": -10.0,
        "complaint_substantiated": -3.0,
        "dissatisfied_rating": -1.0,
        "early_completion_threshold": 0.1,
        "early_completion_bonus_per_10pct": 1.0,
        "weights": {"process": 1.0, "time": 1.0, "fees": 1.0, "satisfaction": 1.0, "complaints": 1.0},
        "rule_areas": {
            f"R{n:02d}": a
            for n, a in zip(range(1, 12), ["time"] * 5 + ["fees"] + ["process"] * 3 + ["complaints"] * 2, strict=True)
        },
    }
    assert parse_config({"id": "gd", "scores": legacy}).scores == ScoresConfig()
    with pytest.raises(ConfigError, match=r"'red_card' belongs to the per-card score scheme"):
        parse_config({"id": "gd", "scores": {**legacy, "red_card": -20.0}})
    with pytest.raises(ConfigError, match=r"weights per area"):
        parse_config({"id": "gd", "scores": {**legacy, "weights": {**legacy["weights"], "fees": 0.5}}})  # type: ignore[dict-item]
