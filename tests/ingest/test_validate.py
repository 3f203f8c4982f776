"""Record validation: every field rule of every record kind, with the error naming the record, field and why."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from node.domain import RECORD_FIELDS
from node.ingest import KIND_TABLES, RecordInvalid, Validator, field_label, record_key
from node.store import Base

TZ = ZoneInfo("Asia/Shanghai")

ACCEPTANCE = {
    "case_no": "C1",
    "implementation_code": "4401130001",
    "department": "番禺区市场监督管理局",
    "accepted_at": "20260105T093000",
}
ITEM = {
    "implementation_code": "4401130001",
    "basic_code": "0001",
    "name": "餐饮服务许可",
    "type_code": "01",
    "level_code": "4",
    "body_name": "番禺区市场监督管理局",
    "body_code": "11440113MB2C12345X",
    "legal_limit": "20",
    "promised_limit": "10",
    "fee_flag": "1",
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(TZ)


def rejection(validator: Validator, kind: str, fields: dict[str, object]) -> RecordInvalid:
    with pytest.raises(RecordInvalid) as caught:
        validator.validate(kind, fields)
    return caught.value


def test_every_field_is_a_model_column() -> None:
    for kind, specs in RECORD_FIELDS.items():
        table = Base.metadata.tables[KIND_TABLES[kind]]
        assert {spec.name for spec in specs} <= set(table.c.keys()), kind


def test_acceptance_gets_typed_values_and_model_defaults(validator: Validator) -> None:
    row = validator.validate("acceptance", ACCEPTANCE)
    assert row["accepted_at"] == datetime(2026, 1, 5, 9, 30)
    assert row["case_type_code"] == "2"  # model default: a promised case
    assert row["department_code"] == ""
    assert row["declared_promised_at"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20260105T093000", datetime(2026, 1, 5, 9, 30)),
        ("20260105093000", datetime(2026, 1, 5, 9, 30)),
        ("2026-01-05 09:30:00", datetime(2026, 1, 5, 9, 30)),
        ("2026-01-05T09:30:00", datetime(2026, 1, 5, 9, 30)),
        # An offset is converted to the node's zone (UTC 01:30 is 09:30 in Shanghai).
        ("2026-01-05T01:30:00+00:00", datetime(2026, 1, 5, 9, 30)),
    ],
)
def test_datetime_forms(validator: Validator, text: str, expected: datetime) -> None:
    assert validator.validate("acceptance", {**ACCEPTANCE, "accepted_at": text})["accepted_at"] == expected


def test_missing_required_field_names_it_in_english_and_chinese(validator: Validator) -> None:
    fields = {key: value for key, value in ACCEPTANCE.items() if key != "department"}
    error = rejection(validator, "acceptance", fields)
    assert (error.field, error.reason) == ("department", "missing_field")
    assert "department (受理单位)" in error.message


def test_blank_required_field_is_missing(validator: Validator) -> None:
    error = rejection(validator, "acceptance", {**ACCEPTANCE, "case_no": "   "})
    assert (error.field, error.reason) == ("case_no", "missing_field")


def test_bad_datetime_says_why(validator: Validator) -> None:
    error = rejection(validator, "acceptance", {**ACCEPTANCE, "accepted_at": "20261305T093000"})
    assert (error.field, error.reason) == ("accepted_at", "bad_datetime")
    assert "month 13" in error.message


def test_every_problem_is_listed_but_the_first_is_the_field(validator: Validator) -> None:
    error = rejection(validator, "acceptance", {**ACCEPTANCE, "case_no": "", "accepted_at": "yesterday"})
    assert error.field == "case_no"
    assert "accepted_at" in error.message and "case_no" in error.message


def test_too_long(validator: Validator) -> None:
    error = rejection(validator, "acceptance", {**ACCEPTANCE, "case_no": "X" * 51})
    assert (error.field, error.reason) == ("case_no", "too_long")


def test_unknown_code(validator: Validator) -> None:
    error = rejection(validator, "acceptance", {**ACCEPTANCE, "case_type_code": "7"})
    assert (error.field, error.reason) == ("case_type_code", "bad_code")


def test_negative_fee(validator: Validator) -> None:
    error = rejection(validator, "payment", {"case_no": "C1", "amount": "-0.01", "paid_at": "20260105T100000"})
    assert (error.field, error.reason) == ("amount", "negative_fee")


@pytest.mark.parametrize("amount", ["12.345", "abc", "NaN", "1e20"])
def test_bad_amounts(validator: Validator, amount: str) -> None:
    error = rejection(validator, "payment", {"case_no": "C1", "amount": amount, "paid_at": "20260105T100000"})
    assert (error.field, error.reason) == ("amount", "bad_number")


def test_amount_is_exact_decimal(validator: Validator) -> None:
    row = validator.validate("payment", {"case_no": "C1", "amount": 12.5, "paid_at": "20260105T100000"})
    assert row["amount"] == Decimal("12.50")


@pytest.mark.parametrize("value", ["0", "6", "x"])
def test_satisfaction_must_be_1_to_5(validator: Validator, value: str) -> None:
    fields = {"case_no": "C1", "evaluated_at": "20260105T100000", "satisfaction_code": value}
    error = rejection(validator, "evaluation", fields)
    assert error.field == "satisfaction_code"
    assert error.reason in {"bad_code", "bad_number"}


def test_step_action_chinese_is_normalised_and_unknown_rejected(validator: Validator) -> None:
    step = {"case_no": "C1", "step_name": "审查", "action": "补正", "started_at": "20260106T090000"}
    assert validator.validate("step", step)["action"] == "supplement"
    assert validator.validate("step", {**step, "action": "Return"})["action"] == "return"
    error = rejection(validator, "step", {**step, "action": "approve"})
    assert (error.field, error.reason) == ("action", "bad_code")


def test_step_cannot_end_before_it_starts(validator: Validator) -> None:
    step = {
        "case_no": "C1",
        "step_name": "审查",
        "action": "通过",
        "started_at": "20260106T090000",
        "ended_at": "20260105T090000",
    }
    error = rejection(validator, "step", step)
    assert (error.field, error.reason) == ("ended_at", "inconsistent")


def test_item_department_defaults_to_body_and_promise_must_not_exceed_law(validator: Validator) -> None:
    assert validator.validate("item", ITEM)["department"] == "番禺区市场监督管理局"
    error = rejection(validator, "item", {**ITEM, "promised_limit": "25"})
    assert (error.field, error.reason) == ("promised_limit", "inconsistent")
    # The item's own Chinese name, not the complaint's field of the same English name.
    assert "承诺办结时限" in error.message


def test_item_booleans_and_bad_boolean(validator: Validator) -> None:
    assert validator.validate("item", {**ITEM, "fee_flag": "是"})["fee_flag"] is True
    assert validator.validate("item", {**ITEM, "fee_flag": 0})["fee_flag"] is False
    error = rejection(validator, "item", {**ITEM, "fee_flag": "maybe"})
    assert (error.field, error.reason) == ("fee_flag", "bad_bool")


def test_negative_limit_is_a_bad_number(validator: Validator) -> None:
    error = rejection(validator, "item", {**ITEM, "legal_limit": "-3"})
    assert (error.field, error.reason) == ("legal_limit", "bad_number")


def test_complaint_needs_a_respondent_unit(validator: Validator) -> None:
    complaint = {"complaint_no": "T1", "title": "办理太慢", "received_at": "20260110T100000"}
    error = rejection(validator, "complaint", complaint)
    assert (error.field, error.reason) == ("respondent_unit", "missing_field")


def test_json_values_are_accepted(validator: Validator) -> None:
    row = validator.validate(
        "evaluation", {"case_no": "C1", "evaluated_at": "2026-01-05T10:00:00", "satisfaction_code": 2}
    )
    assert row["satisfaction_code"] == 2
    error = rejection(
        validator, "evaluation", {"case_no": ["C1"], "evaluated_at": "20260105T100000", "satisfaction_code": 2}
    )
    assert error.field == "case_no"


def test_labels_and_keys() -> None:
    assert field_label("promised_limit", "item") == "promised_limit (承诺办结时限)"
    assert field_label("promised_limit", "complaint") == "promised_limit (承诺时限)"
    assert record_key("step", {"case_no": "C1", "step_name": "审查", "started_at": datetime(2026, 1, 6, 9)}) == (
        "C1/审查/2026-01-06T09:00:00"
    )
    assert record_key("acceptance", {}) is None
