"""The rule catalogue: stable ids, threshold resolution (defaults < rule < item type), grouping, config errors."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, select

from node.config import SupervisionConfig
from node.errors import ConfigError
from node.supervision import (
    ALL_RULE_IDS,
    RULES,
    RuleSettings,
    Thresholds,
    case_subject,
    complaint_subject,
    escalation_subject,
    groups_condition,
    item_subject,
    payment_subject,
    step_subject,
)


def test_rule_ids_are_stable() -> None:
    assert ALL_RULE_IDS == (
        "R01",
        "R02",
        "R03",
        "R04",
        "R05",
        "R06",
        "R07",
        "R08",
        "R09",
        "R10",
        "R11",
        "R12",
        "R13",
        "R14",
        "R15",
    )
    assert {rule_id: rule.severity for rule_id, rule in RULES.items()} == {
        "R01": "reminder",
        "R02": "yellow",
        "R03": "red",
        "R04": "red",
        "R05": "reminder",
        "R06": "red",
        "R07": "yellow",
        "R08": "yellow",
        "R09": "reminder",
        "R10": "yellow",
        "R11": "yellow",
        "R12": "yellow",
        "R13": "yellow",
        "R14": "reminder",
        "R15": "yellow",
    }


def test_subjects() -> None:
    assert case_subject("HP-1") == "case:HP-1"
    assert item_subject("440112001", 2) == "item:440112001:version:2"
    assert step_subject("HP-1", 7) == "case:HP-1:step:7"
    assert payment_subject("HP-1", 3) == "case:HP-1:payment:3"
    assert complaint_subject("TS-1") == "complaint:TS-1"
    assert escalation_subject("case:HP-1", 12) == "case:HP-1:alert:12"


def test_defaults_come_from_the_supervision_section() -> None:
    thresholds = Thresholds(
        SupervisionConfig(reminder_workdays=2, yellow_supervision_workdays=4, late_entry_hours=48, max_supplements=2)
    )
    assert thresholds.settings("R01", "01") == RuleSettings(True, 2, 4, 48, 2)


def test_rule_override_then_item_type_override_wins() -> None:
    config = SupervisionConfig.model_validate(
        {
            "reminder_workdays": 1,
            "rules": {"R01": {"reminder_workdays": 2}, "R02": {"supervision_workdays": 5}},
            "item_types": {"01": {"R01": {"reminder_workdays": 4}, "R02": {"enabled": False}}},
        }
    )
    thresholds = Thresholds(config)
    assert thresholds.settings("R01", "").reminder_workdays == 2
    assert thresholds.settings("R01", "10").reminder_workdays == 2
    assert thresholds.settings("R01", "01").reminder_workdays == 4
    assert thresholds.settings("R02", "10") == RuleSettings(True, 1, 5, 72, 1)
    assert not thresholds.enabled("R02", "01")
    assert thresholds.settings("R02", "01").supervision_workdays == 5  # untouched fields keep the rule's value


def test_groups_split_overridden_item_types_and_drop_disabled_ones() -> None:
    config = SupervisionConfig.model_validate(
        {"item_types": {"01": {"R01": {"reminder_workdays": 3}}, "02": {"R01": {"enabled": False}}}}
    )
    groups = Thresholds(config).groups("R01")
    shapes = [(g.others, sorted(g.item_types), sorted(g.excluded_types), g.settings.reminder_workdays) for g in groups]
    assert shapes == [
        (True, [], ["01", "02"], 1),
        (False, ["01"], [], 3),
    ]
    assert [g.others for g in Thresholds(config).groups("R03")] == [True]
    none = Thresholds(SupervisionConfig.model_validate({"rules": {"R03": {"enabled": False}}})).groups("R03")
    assert none == []


def test_groups_condition_selects_the_right_types() -> None:
    metadata = MetaData()
    table = Table("t", metadata, Column("type_code", String))
    engine = create_engine("sqlite://")
    metadata.create_all(engine)

    def selected(config: dict[str, object], rule_id: str) -> list[str]:
        groups = Thresholds(SupervisionConfig.model_validate(config)).groups(rule_id)
        with engine.connect() as conn:
            query = select(table.c.type_code).where(groups_condition(groups, table.c.type_code))
            return sorted(conn.execute(query).scalars())

    with engine.begin() as conn:
        conn.execute(table.insert(), [{"type_code": code} for code in ("01", "02", "10", "")])
    only_01 = {"rules": {"R02": {"enabled": False}}, "item_types": {"01": {"R02": {"enabled": True}}}}
    assert selected(only_01, "R02") == ["01"]
    all_but_10 = {"item_types": {"10": {"R02": {"enabled": False}}, "01": {"R02": {"supervision_workdays": 9}}}}
    assert selected(all_but_10, "R02") == ["", "01", "02"]
    assert selected({"rules": {"R02": {"enabled": False}}}, "R02") == []
    assert selected({}, "R02") == ["", "01", "02", "10"]


def test_unknown_rule_ids_and_bad_item_types_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"supervision\.rules\.R99"):
        Thresholds(SupervisionConfig.model_validate({"rules": {"R99": {"enabled": False}}}))
    with pytest.raises(ConfigError, match=r"supervision\.item_types\.01\.X1"):
        Thresholds(SupervisionConfig.model_validate({"item_types": {"01": {"X1": {}}}}))
    with pytest.raises(ConfigError, match=r"supervision\.item_types\.licence"):
        Thresholds(SupervisionConfig.model_validate({"item_types": {"licence": {"R01": {}}}}))


def test_fingerprint_changes_with_any_setting() -> None:
    base = Thresholds(SupervisionConfig()).fingerprint()
    assert base == Thresholds(SupervisionConfig()).fingerprint()
    assert 0 <= base < 2**63
    assert Thresholds(SupervisionConfig(reminder_workdays=2)).fingerprint() != base
    changed = SupervisionConfig.model_validate({"item_types": {"01": {"R01": {"enabled": False}}}})
    assert Thresholds(changed).fingerprint() != base
